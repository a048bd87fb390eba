package kubeapi

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// ErrConflict matches (errors.Is) a StatusError of code 409: an update
// lost the race against another writer; get the object again and retry.
var ErrConflict = errors.New("conflict")

// Client makes weft's requests to one apiserver. It is safe for
// concurrent use.
type Client struct {
	server    string // Config.Server without a trailing slash
	http      *http.Client
	transport *http.Transport
	token     string
	tokenFile string
	userAgent string
}

// New returns a client for cfg, having read the files it names (the CA, a
// client certificate and key, the token file) so that a bad one is an error
// now rather than at the first request.
func New(cfg Config) (*Client, error) {
	if err := checkServer(cfg.Server); err != nil {
		return nil, fmt.Errorf("apiserver: %w", err)
	}
	if cfg.Token != "" && cfg.TokenFile != "" {
		return nil, errors.New("apiserver credentials: both a token and a token file: give one")
	}
	tlsConf, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{
		server:    strings.TrimSuffix(cfg.Server, "/"),
		token:     cfg.Token,
		tokenFile: cfg.TokenFile,
		userAgent: cfg.UserAgent,
		transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     tlsConf,
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     90 * time.Second,
			// A custom TLS config turns HTTP/2 off unless asked for.
			ForceAttemptHTTP2: true,
		},
	}
	if c.userAgent == "" {
		c.userAgent = "weft"
	}
	c.http = &http.Client{Transport: c.transport, Timeout: cfg.Timeout}
	if c.tokenFile != "" {
		if _, err := c.bearerToken(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// tlsConfig verifies the apiserver with cfg's CA (or the system's roots)
// and presents cfg's client certificate, if any.
func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLSServerName, InsecureSkipVerify: cfg.Insecure}
	ca, caName := cfg.CAData, "certificate-authority-data"
	if cfg.CAFile != "" {
		if len(ca) > 0 {
			return nil, errors.New("apiserver certificate authority: both a file and data: give one")
		}
		var err error
		if ca, err = os.ReadFile(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("apiserver certificate authority: %w", err)
		}
		caName = cfg.CAFile
	}
	if len(ca) > 0 {
		if cfg.Insecure {
			return nil, errors.New("apiserver certificate authority given with insecure (skip verification): give one")
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("apiserver certificate authority %s: no PEM certificate", caName)
		}
		tc.RootCAs = pool
	}
	cert, err := pemOf("client certificate", cfg.CertData, cfg.CertFile)
	if err != nil {
		return nil, err
	}
	key, err := pemOf("client key", cfg.KeyData, cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	if len(cert) > 0 || len(key) > 0 {
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("client certificate and key: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// pemOf is data, or else the content of file.
func pemOf(what string, data []byte, file string) ([]byte, error) {
	if file == "" {
		return data, nil
	}
	if len(data) > 0 {
		return nil, fmt.Errorf("%s: both a file and data: give one", what)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

// bearerToken is the token to send: Config.Token, or the token file as it
// is now. Reading a small file per request costs microseconds, and weft
// makes a request a minute at most: no cache to go stale.
func (c *Client) bearerToken() (string, error) {
	if c.tokenFile == "" {
		return c.token, nil
	}
	b, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return "", fmt.Errorf("apiserver token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("apiserver token: %s is empty", c.tokenFile)
	}
	return tok, nil
}

// CloseIdleConnections closes the client's idle connections, and with
// them their goroutines. The client stays usable.
func (c *Client) CloseIdleConnections() {
	c.transport.CloseIdleConnections()
}

// The content types of the API: JSON everywhere; protobuf for the built-in
// types, in an envelope (protobufMagic, then a runtime.Unknown holding the
// object).
const (
	mediaJSON     = "application/json"
	mediaProtobuf = "application/vnd.kubernetes.protobuf"
)

var protobufMagic = []byte("k8s\x00")

// maxErrorBody bounds what is read of a failed request's answer.
const maxErrorBody = 1 << 20

// request is one call of the API.
type request struct {
	method string
	path   string // escaped, from /api or /apis on
	query  url.Values
	body   any    // sent as JSON when not nil
	accept string // mediaJSON unless set
}

// do sends r and decodes a 2xx answer into into. Any other answer is a
// *StatusError.
func (c *Client) do(ctx context.Context, r request, into any) error {
	u, err := url.Parse(c.server + r.path)
	if err != nil {
		return fmt.Errorf("%s %s%s: %w", r.method, c.server, r.path, err)
	}
	u.RawQuery = r.query.Encode()
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return fmt.Errorf("%s %s: encode %T: %w", r.method, readable(u), r.body, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", cmp.Or(r.accept, mediaJSON))
	req.Header.Set("User-Agent", c.userAgent)
	if body != nil {
		req.Header.Set("Content-Type", mediaJSON)
	}
	tok, err := c.bearerToken()
	if err != nil {
		return fmt.Errorf("%s %s: %w", r.method, readable(u), err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err // a *url.Error: it names the method and the URL
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return &StatusError{Method: r.method, URL: readable(u), Code: resp.StatusCode,
			APIStatus: statusOf(resp.StatusCode, resp.Header.Get("Content-Type"), data)}
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", r.method, readable(u), err)
	}
	if err := decode(resp.Header.Get("Content-Type"), data, into); err != nil {
		return fmt.Errorf("%s %s: decode %T: %w", r.method, readable(u), into, err)
	}
	return nil
}

// readable is u for error messages: its query unescaped, so a label
// selector reads as written.
func readable(u *url.URL) string {
	s := u.Scheme + "://" + u.Host + u.EscapedPath()
	if u.RawQuery != "" {
		q, err := url.QueryUnescape(u.RawQuery)
		if err != nil {
			q = u.RawQuery
		}
		s += "?" + q
	}
	return s
}

// decode reads an answer of contentType into into, which for protobuf must
// be a type of k8s.io/api or apimachinery (they have Unmarshal methods).
func decode(contentType string, data []byte, into any) error {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch mt {
	case mediaJSON:
		return json.Unmarshal(data, into)
	case mediaProtobuf:
		pb, ok := into.(interface{ Unmarshal([]byte) error })
		if !ok {
			return fmt.Errorf("protobuf answer for a %T", into)
		}
		u, err := unwrapProtobuf(data)
		if err != nil {
			return err
		}
		return pb.Unmarshal(u.Raw)
	default:
		return fmt.Errorf("answer of content type %q, want %s or %s", contentType, mediaJSON, mediaProtobuf)
	}
}

// unwrapProtobuf takes an object out of the API's protobuf envelope.
func unwrapProtobuf(data []byte) (*runtime.Unknown, error) {
	if !bytes.HasPrefix(data, protobufMagic) {
		return nil, errors.New("protobuf answer without the k8s envelope")
	}
	var u runtime.Unknown
	if err := u.Unmarshal(data[len(protobufMagic):]); err != nil {
		return nil, fmt.Errorf("protobuf envelope: %w", err)
	}
	if u.ContentEncoding != "" {
		return nil, fmt.Errorf("protobuf answer in content encoding %q", u.ContentEncoding)
	}
	return &u, nil
}

// statusOf is the Status in a failed request's answer. An answer that holds
// none (a proxy's error page, say) gives a Status of code whose message is
// the start of the answer.
func statusOf(code int, contentType string, data []byte) metav1.Status {
	var st metav1.Status
	mt, _, _ := mime.ParseMediaType(contentType)
	switch mt {
	case mediaJSON:
		if json.Unmarshal(data, &st) == nil && st.Kind == "Status" {
			return st
		}
	case mediaProtobuf:
		if u, err := unwrapProtobuf(data); err == nil && u.Kind == "Status" && st.Unmarshal(u.Raw) == nil {
			return st
		}
	}
	msg := strings.Join(strings.Fields(string(data)), " ")
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = "empty answer"
	}
	return metav1.Status{Status: metav1.StatusFailure, Code: int32(code), Message: msg}
}

// StatusError is an answer of the apiserver other than 2xx: what was asked,
// the HTTP status code, and the API's Status, whose message says why.
type StatusError struct {
	Method, URL string
	Code        int
	APIStatus   metav1.Status
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.URL, e.Code, http.StatusText(e.Code), e.APIStatus.Message)
}

// Status returns the apiserver's Status. It makes a StatusError an
// APIStatus of k8s.io/apimachinery/pkg/api/errors, so that its IsNotFound,
// IsForbidden and the like work on it.
func (e *StatusError) Status() metav1.Status { return e.APIStatus }

// Is reports whether e is ErrConflict.
func (e *StatusError) Is(target error) bool {
	return target == ErrConflict && e.Code == http.StatusConflict
}
