package kubeapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// testCA signs the fake apiserver's certificate and clients'.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key signed by ca: for 127.0.0.1 as
// a server, or for the user cn as a client.
func (ca *testCA) issue(t *testing.T, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// fakeAPIServer is an https server that records the requests it gets and
// answers them with answer.
type fakeAPIServer struct {
	*httptest.Server
	ca *testCA

	mu       sync.Mutex
	requests []recorded
	answer   func(w http.ResponseWriter, r *http.Request)
}

type recorded struct {
	Method, Path, Query                     string
	Authorization, Accept, UserAgent, CType string
	Body                                    string
	ClientCN                                string
}

// newFakeAPIServer starts a fake apiserver; clientAuth says whether it
// asks for client certificates.
func newFakeAPIServer(t *testing.T, clientAuth tls.ClientAuthType) *fakeAPIServer {
	t.Helper()
	f := &fakeAPIServer{ca: newTestCA(t)}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec := recorded{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
			Authorization: r.Header.Get("Authorization"), Accept: r.Header.Get("Accept"),
			UserAgent: r.Header.Get("User-Agent"), CType: r.Header.Get("Content-Type"), Body: string(body)}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			rec.ClientCN = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		f.mu.Lock()
		f.requests = append(f.requests, rec)
		answer := f.answer
		f.mu.Unlock()
		answer(w, r)
	}))
	certPEM, keyPEM := f.ca.issue(t, "apiserver", true)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(f.ca.cert)
	f.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes TestTLS fails on purpose
	f.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: clientAuth}
	f.StartTLS()
	t.Cleanup(f.Close)
	f.answerWith(http.StatusOK, mediaJSON, []byte(`{"kind":"NodeList","apiVersion":"v1","items":[]}`))
	return f
}

func (f *fakeAPIServer) answerWith(code int, contentType string, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(code)
		w.Write(body)
	}
}

func (f *fakeAPIServer) last(t *testing.T) recorded {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		t.Fatal("no request")
	}
	return f.requests[len(f.requests)-1]
}

func (f *fakeAPIServer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// config is a Config for f with a token.
func (f *fakeAPIServer) config() Config {
	return Config{Server: f.URL, CAData: f.ca.pem, Token: "secret", Timeout: 10 * time.Second}
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// protobufOf is obj as the apiserver sends it in protobuf: the magic, then
// a runtime.Unknown holding it.
func protobufOf(t *testing.T, kind string, obj interface{ Marshal() ([]byte, error) }) []byte {
	t.Helper()
	raw, err := obj.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	u := runtime.Unknown{TypeMeta: runtime.TypeMeta{APIVersion: "v1", Kind: kind}, Raw: raw, ContentType: mediaProtobuf}
	b, err := u.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("k8s\x00"), b...)
}

func testNodeList() *corev1.NodeList {
	return &corev1.NodeList{Items: []corev1.Node{{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"kubernetes.io/os": "linux"}},
		Status: corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}}}
}

// TestInClusterClient: a client from a pod's environment and service
// account files reaches the apiserver with the CA and the token, reads
// the token file again for every request (the kubelet rotates it), and
// leaves no goroutine once its connections are closed.
func TestInClusterClient(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f := newFakeAPIServer(t, tls.NoClientCert)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ca.crt"), string(f.ca.pem))
	writeFile(t, filepath.Join(dir, "token"), "first-token\n")
	host, port, _ := net.SplitHostPort(f.Listener.Addr().String())
	env := map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
	cfg, err := inCluster(func(k string) string { return env[k] }, dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.UserAgent = "weft-agent"
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.answerWith(http.StatusOK, mediaJSON, mustJSON(t, testNodeList()))
	got, err := c.ListNodes(t.Context(), "kubernetes.io/os=linux")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(testNodeList(), got); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	want := recorded{Method: "GET", Path: "/api/v1/nodes", Query: "labelSelector=kubernetes.io%2Fos%3Dlinux&resourceVersion=0",
		Authorization: "Bearer first-token", Accept: mediaProtobuf + ", " + mediaJSON, UserAgent: "weft-agent"}
	if diff := cmp.Diff(want, f.last(t)); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}

	writeFile(t, filepath.Join(dir, "token"), "rotated-token")
	if _, err := c.ListNodes(t.Context(), ""); err != nil {
		t.Fatal(err)
	}
	if r := f.last(t); r.Authorization != "Bearer rotated-token" || r.Query != "resourceVersion=0" {
		t.Errorf("after rotation: %+v, want the new token and no selector", r)
	}
	writeFile(t, filepath.Join(dir, "token"), "")
	n := f.count()
	if _, err := c.ListNodes(t.Context(), ""); err == nil || !strings.Contains(err.Error(), "is empty") || f.count() != n {
		t.Errorf("empty token file: %v, %d requests sent; want an error and none", err, f.count()-n)
	}
	c.CloseIdleConnections()
	f.Close()
}

// TestListNodesEncodings: a node list in protobuf (what ListNodes asks for
// first) or JSON decodes the same.
func TestListNodesEncodings(t *testing.T) {
	f := newFakeAPIServer(t, tls.NoClientCert)
	c := newClient(t, f.config())
	for _, enc := range []struct {
		name, contentType string
		body              []byte
	}{
		{"json", mediaJSON + "; charset=utf-8", mustJSON(t, testNodeList())},
		{"protobuf", mediaProtobuf, protobufOf(t, "NodeList", testNodeList())},
	} {
		t.Run(enc.name, func(t *testing.T) {
			f.answerWith(http.StatusOK, enc.contentType, enc.body)
			got, err := c.ListNodes(t.Context(), "")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(testNodeList(), got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range []struct {
		name, contentType, body, want string
	}{
		{"no envelope", mediaProtobuf, "\x0a\x00", "without the k8s envelope"},
		{"broken envelope", mediaProtobuf, "k8s\x00\xff\xff", "protobuf envelope"},
		{"yaml", "application/yaml", "items: []", `content type "application/yaml"`},
		{"bad json", mediaJSON, "{", "decode *v1.NodeList"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			f.answerWith(http.StatusOK, bad.contentType, []byte(bad.body))
			_, err := c.ListNodes(t.Context(), "")
			if err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), "GET "+f.URL+"/api/v1/nodes") {
				t.Errorf("got %v, want an error naming the request and %q", err, bad.want)
			}
		})
	}
}

// TestRequests: the paths, verbs and bodies of the other calls.
func TestRequests(t *testing.T) {
	f := newFakeAPIServer(t, tls.NoClientCert)
	cfg := f.config()
	cfg.Server += "/proxy/k8s/" // an authenticating proxy's prefix
	c := newClient(t, cfg)
	ctx := t.Context()

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"weft.dev/inject": "enabled"}}}
	f.answerWith(http.StatusOK, mediaJSON, mustJSON(t, ns))
	got, err := c.GetNamespace(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ns, got); diff != "" {
		t.Errorf("namespace (-want +got):\n%s", diff)
	}
	if r := f.last(t); r.Method != "GET" || r.Path != "/proxy/k8s/api/v1/namespaces/shop" || r.Accept != mediaJSON || r.UserAgent != "weft" {
		t.Errorf("get namespace: %+v", r)
	}

	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-injector", ResourceVersion: "41"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "pods.weft.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: []byte("CA")}}},
	}
	f.answerWith(http.StatusOK, mediaJSON, mustJSON(t, mwc))
	if _, err := c.GetMutatingWebhookConfiguration(ctx, "weft-injector"); err != nil {
		t.Fatal(err)
	}
	if r := f.last(t); r.Method != "GET" || r.Path != "/proxy/k8s/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/weft-injector" {
		t.Errorf("get webhook configuration: %+v", r)
	}
	stored := mwc.DeepCopy()
	stored.ResourceVersion = "42"
	f.answerWith(http.StatusOK, mediaJSON, mustJSON(t, stored))
	out, err := c.UpdateMutatingWebhookConfiguration(ctx, mwc)
	if err != nil {
		t.Fatal(err)
	}
	if out.ResourceVersion != "42" {
		t.Errorf("update answered resourceVersion %q, want 42", out.ResourceVersion)
	}
	r := f.last(t)
	if r.Method != "PUT" || r.Path != "/proxy/k8s/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/weft-injector" || r.CType != mediaJSON {
		t.Errorf("update webhook configuration: %+v", r)
	}
	var sent admissionregistrationv1.MutatingWebhookConfiguration
	if err := json.Unmarshal([]byte(r.Body), &sent); err != nil {
		t.Fatal(err)
	}
	want := mwc.DeepCopy()
	want.TypeMeta = metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"}
	if diff := cmp.Diff(want, &sent); diff != "" {
		t.Errorf("update body (-want +got):\n%s", diff)
	}
	if mwc.Kind != "" {
		t.Error("the caller's object was changed")
	}

	n := f.count()
	for _, name := range []string{"", ".", ".."} {
		if _, err := c.GetNamespace(ctx, name); err == nil {
			t.Errorf("namespace %q: no error", name)
		}
		if _, err := c.GetMutatingWebhookConfiguration(ctx, name); err == nil {
			t.Errorf("webhook configuration %q: no error", name)
		}
	}
	if f.count() != n {
		t.Errorf("requests made for names that are none")
	}
	// A slash in a name stays in the name, not another path.
	if _, err := c.GetNamespace(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	if r := f.last(t); r.Path != "/proxy/k8s/api/v1/namespaces/a%2Fb" {
		t.Errorf("namespace a/b: path %s", r.Path)
	}
}

// TestStatusErrors: a failed request says what was asked, the code, and
// the apiserver's message, whatever the encoding of its Status; answers
// without a Status give their first bytes instead.
func TestStatusErrors(t *testing.T) {
	f := newFakeAPIServer(t, tls.NoClientCert)
	c := newClient(t, f.config())
	forbidden := &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: 403,
		Reason:  metav1.StatusReasonForbidden,
		Message: `nodes is forbidden: User "system:serviceaccount:weft-system:weft-injector" cannot list resource "nodes" in API group "" at the cluster scope`,
	}
	conflict := &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: 409,
		Reason: metav1.StatusReasonConflict, Message: "the object has been modified; please apply your changes to the latest version and try again",
	}
	unauthorized := &metav1.Status{Status: metav1.StatusFailure, Code: 401, Reason: metav1.StatusReasonUnauthorized, Message: "Unauthorized"}
	listURL := "GET " + f.URL + "/api/v1/nodes?labelSelector=kubernetes.io/os=linux&resourceVersion=0: "
	for _, c2 := range []struct {
		name        string
		code        int
		contentType string
		body        []byte
		want        string
		is          func(error) bool
	}{
		{"json Status", 403, mediaJSON, mustJSON(t, forbidden), listURL + "403 Forbidden: " + forbidden.Message, apierrors.IsForbidden},
		{"protobuf Status", 401, mediaProtobuf, protobufOf(t, "Status", unauthorized), listURL + "401 Unauthorized: Unauthorized", apierrors.IsUnauthorized},
		{"conflict", 409, mediaJSON, mustJSON(t, conflict), "409 Conflict: the object has been modified", func(err error) bool { return errors.Is(err, ErrConflict) }},
		{"proxy error page", 502, "text/html", []byte("<html>\n<body>Bad   gateway</body></html>"), listURL + "502 Bad Gateway: <html> <body>Bad gateway</body></html>", nil},
		{"empty", 500, "", nil, "500 Internal Server Error: empty answer", nil},
		{"json without Status", 404, mediaJSON, []byte(`{"error":"no route"}`), `404 Not Found: {"error":"no route"}`, nil},
		{"long", 503, "text/plain", []byte(strings.Repeat("x", 5000)), "503 Service Unavailable: " + strings.Repeat("x", 200) + "...", nil},
	} {
		t.Run(c2.name, func(t *testing.T) {
			f.answerWith(c2.code, c2.contentType, c2.body)
			_, err := c.ListNodes(t.Context(), "kubernetes.io/os=linux")
			if err == nil || !strings.Contains(err.Error(), c2.want) {
				t.Fatalf("got %v\nwant an error with %s", err, c2.want)
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Code != c2.code {
				t.Errorf("%T %v, want a StatusError of code %d", err, err, c2.code)
			}
			if c2.is != nil && !c2.is(err) {
				t.Errorf("%v: not recognised as what it is", err)
			}
			if c2.code != 409 && errors.Is(err, ErrConflict) {
				t.Errorf("%v is a conflict", err)
			}
		})
	}
}

// TestTimeout: Config.Timeout bounds a request to an apiserver that does
// not answer.
func TestTimeout(t *testing.T) {
	f := newFakeAPIServer(t, tls.NoClientCert)
	f.mu.Lock()
	f.answer = func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}
	f.mu.Unlock()
	cfg := f.config()
	cfg.Timeout = 300 * time.Millisecond
	c := newClient(t, cfg)
	start := time.Now()
	_, err := c.GetNamespace(context.Background(), "shop")
	if err == nil || !strings.Contains(err.Error(), "/api/v1/namespaces/shop") || time.Since(start) > 5*time.Second {
		t.Errorf("got %v after %s, want a timeout naming the request after 300 ms", err, time.Since(start))
	}
}

// TestTLS: the apiserver is verified with the configured CA only (or not
// at all when insecure), and a client certificate, from data or files,
// is presented.
func TestTLS(t *testing.T) {
	f := newFakeAPIServer(t, tls.VerifyClientCertIfGiven)
	certPEM, keyPEM := f.ca.issue(t, "weft-node-1", false)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ca.crt"), string(f.ca.pem))
	writeFile(t, filepath.Join(dir, "me.crt"), string(certPEM))
	writeFile(t, filepath.Join(dir, "me.key"), string(keyPEM))
	other := newTestCA(t)
	for _, c := range []struct {
		name    string
		cfg     Config
		wantCN  string
		wantErr string
	}{
		{"CA data, token", Config{CAData: f.ca.pem, Token: "t"}, "", ""},
		{"CA file, client certificate data", Config{CAFile: filepath.Join(dir, "ca.crt"), CertData: certPEM, KeyData: keyPEM}, "weft-node-1", ""},
		{"client certificate files", Config{CAData: f.ca.pem, CertFile: filepath.Join(dir, "me.crt"), KeyFile: filepath.Join(dir, "me.key")}, "weft-node-1", ""},
		{"insecure", Config{Insecure: true}, "", ""},
		{"another CA", Config{CAData: other.pem}, "", "certificate signed by unknown authority"},
		{"system roots", Config{}, "", "certificate signed by unknown authority"},
		{"wrong server name", Config{CAData: f.ca.pem, TLSServerName: "kubernetes.default.svc"}, "", "kubernetes.default.svc"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Server = f.URL
			cl := newClient(t, c.cfg)
			_, err := cl.ListNodes(t.Context(), "")
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Errorf("got %v, want an error with %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cn := f.last(t).ClientCN; cn != c.wantCN {
				t.Errorf("client certificate %q, want %q", cn, c.wantCN)
			}
		})
	}
}

// TestNewErrors: a configuration that cannot work is refused by New,
// saying what is wrong.
func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, "me", false)
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, " \n")
	const srv = "https://127.0.0.1:6443"
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no server", Config{}, "apiserver: no server"},
		{"server without scheme", Config{Server: "127.0.0.1:6443"}, "want https://host"},
		{"token and token file", Config{Server: srv, Token: "t", TokenFile: empty}, "both a token and a token file"},
		{"missing CA file", Config{Server: srv, CAFile: filepath.Join(dir, "ca.crt")}, "apiserver certificate authority: open " + filepath.Join(dir, "ca.crt")},
		{"CA not PEM", Config{Server: srv, CAData: []byte("not PEM")}, "certificate-authority-data: no PEM certificate"},
		{"CA file not PEM", Config{Server: srv, CAFile: empty}, empty + ": no PEM certificate"},
		{"CA file and data", Config{Server: srv, CAFile: empty, CAData: ca.pem}, "both a file and data"},
		{"CA and insecure", Config{Server: srv, CAData: ca.pem, Insecure: true}, "insecure"},
		{"missing token file", Config{Server: srv, TokenFile: filepath.Join(dir, "token")}, "apiserver token: open " + filepath.Join(dir, "token")},
		{"empty token file", Config{Server: srv, TokenFile: empty}, "apiserver token: " + empty + " is empty"},
		{"certificate without key", Config{Server: srv, CertData: certPEM}, "client certificate and key"},
		{"key of another certificate", Config{Server: srv, CertData: certPEM, KeyData: mustKey(t, ca)}, "client certificate and key"},
		{"missing certificate file", Config{Server: srv, CertFile: filepath.Join(dir, "me.crt"), KeyData: keyPEM}, "client certificate: open"},
		{"certificate file and data", Config{Server: srv, CertFile: empty, CertData: certPEM, KeyData: keyPEM}, "client certificate: both a file and data"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

// mustKey is a key that belongs to no certificate of the test.
func mustKey(t *testing.T, ca *testCA) []byte {
	t.Helper()
	_, key := ca.issue(t, "someone else", false)
	return key
}
