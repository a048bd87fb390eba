package proxy

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/splice"
)

// Defaults for the zero values of Proxy.
const (
	DefaultMaxConns         = 1024
	DefaultDialTimeout      = 10 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
)

// maxHeaderBytes bounds the head of a request to the HTTP proxy.
const maxHeaderBytes = 64 << 10

// DialFunc connects to address on network, as net.Dialer.DialContext
// does. ctx bounds the dial only, not the connection it returns.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Proxy serves connections of local programs by dialing their
// destination with Dial and splicing the two connections, carrying
// half-closes and resets across. A Proxy may serve several listeners at
// once; it must not be copied after its first use.
type Proxy struct {
	// Dial connects to the destinations. It is required.
	Dial DialFunc

	// MaxConns bounds the connections served at once, over all of
	// p's Serve calls. Beyond it, a SOCKS5 client gets reply 0x01
	// (general failure), an HTTP client 503 Service Unavailable, and a
	// forward client a closed connection. Zero means DefaultMaxConns.
	MaxConns int

	// DialTimeout bounds each Dial. Zero means DefaultDialTimeout.
	DialTimeout time.Duration

	// HandshakeTimeout bounds reading a client's SOCKS5 handshake or
	// HTTP request head, so a stalled client cannot hold a connection.
	// Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// Logger receives a record for every failed connection, at debug
	// level. Nil discards them.
	Logger *slog.Logger

	active    atomic.Int64 // connections being served
	rejecting atomic.Int64 // connections being told MaxConns is reached
}

// connHandler serves one accepted connection c. The caller closes c when
// it returns; t tracks the connections c is spliced to.
type connHandler func(ctx context.Context, c net.Conn, t *splice.Tracker)

// ServeSOCKS5 serves SOCKS5 (RFC 1928) on ln: the CONNECT command to
// IPv4, IPv6 and domain-name destinations, with no authentication, which
// is for programs on the same host only. BIND and UDP ASSOCIATE get reply
// 0x07 (command not supported). It returns nil once ctx is done, after
// closing ln and every connection and waiting for their goroutines, or
// the error that stopped it accepting.
func (p *Proxy) ServeSOCKS5(ctx context.Context, ln net.Listener) error {
	return p.serve(ctx, ln, "socks5", p.handleSOCKS5, p.rejectSOCKS5)
}

// ServeHTTP serves an HTTP proxy on ln: CONNECT tunnels to any host:port,
// and plain requests with an absolute http:// URI, each forwarded on a
// connection of its own and answered with "Connection: close". It
// returns as ServeSOCKS5 does. (It is not an http.Handler.)
func (p *Proxy) ServeHTTP(ctx context.Context, ln net.Listener) error {
	return p.serve(ctx, ln, "http", p.handleHTTP, p.rejectHTTP)
}

// ServeForward splices every connection accepted on ln to a connection
// to target on network (tcp, tcp4 or tcp6), a static forward such as
// 127.0.0.1:5432 to a database in the overlay. A client whose target
// cannot be dialed has its connection reset. It returns as ServeSOCKS5
// does.
func (p *Proxy) ServeForward(ctx context.Context, ln net.Listener, network, target string) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		ln.Close()
		return fmt.Errorf("proxy: forward %s to %s %s: unsupported network (want tcp, tcp4 or tcp6)", ln.Addr(), network, target)
	}
	forward := func(ctx context.Context, c net.Conn, t *splice.Tracker) {
		up, err := p.dial(ctx, network, target)
		if err != nil {
			p.logger().Debug("proxy: forward: dial failed", "client", c.RemoteAddr(), "target", target, "err", err)
			splice.Abort(c)
			return
		}
		p.splice(c, up, t)
	}
	return p.serve(ctx, ln, "forward", forward, nil)
}

// serve accepts connections on ln and runs handle for each on a goroutine
// of its own, or reject once MaxConns connections are being served
// (closing the connection when reject is nil or as many are already
// being rejected).
func (p *Proxy) serve(ctx context.Context, ln net.Listener, kind string, handle, reject connHandler) error {
	if p.Dial == nil {
		ln.Close()
		return fmt.Errorf("proxy: %s on %s: no Dial function", kind, ln.Addr())
	}
	ctx, cancel := context.WithCancel(ctx)
	var t splice.Tracker
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		<-ctx.Done()
		ln.Close() // ends Accept
	}()
	defer func() {
		cancel()
		<-closed
		t.Shutdown()
		t.Wait()
	}()

	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("proxy: %s: accept on %s: %w", kind, ln.Addr(), err)
			}
			// Out of file descriptors and the like: wait for
			// connections to close, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.logger().Warn("proxy: accept failed; retrying", "kind", kind, "listener", ln.Addr(), "err", err, "delay", delay)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		p.dispatch(ctx, &t, c, handle, reject)
	}
}

// dispatch starts handle or reject on c, or closes it.
func (p *Proxy) dispatch(ctx context.Context, t *splice.Tracker, c net.Conn, handle, reject connHandler) {
	limit := int64(cmp.Or(p.MaxConns, DefaultMaxConns))
	run := func(count *atomic.Int64, h connHandler) bool {
		if count.Add(1) > limit {
			count.Add(-1)
			return false
		}
		id, ok := t.Track(c)
		if ok && t.Start(func() {
			defer count.Add(-1)
			defer t.Untrack(id)
			defer c.Close()
			h(ctx, c, t)
		}) {
			return true
		}
		t.Untrack(id)
		count.Add(-1)
		return false
	}
	if run(&p.active, handle) {
		return
	}
	// Rejections are bounded too, so a flood costs at most MaxConns
	// goroutines more.
	if reject != nil && run(&p.rejecting, reject) {
		return
	}
	c.Close()
}

// dial dials address with p.Dial within p.DialTimeout.
func (p *Proxy) dial(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(p.DialTimeout, DefaultDialTimeout))
	defer cancel()
	c, err := p.Dial(ctx, network, address)
	if err == nil && c == nil {
		err = fmt.Errorf("dial %s %s: Dial returned no connection", network, address)
	}
	return c, err
}

// splice splices the client connection c to up, tracking up so that a
// shutdown aborts it.
func (p *Proxy) splice(c, up net.Conn, t *splice.Tracker) {
	id, ok := t.Track(up)
	if !ok {
		splice.Abort(up)
		return
	}
	defer t.Untrack(id)
	splice.Conns(c, up)
}

func (p *Proxy) handshakeDeadline() time.Time {
	return time.Now().Add(cmp.Or(p.HandshakeTimeout, DefaultHandshakeTimeout))
}

func (p *Proxy) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// SOCKS5 protocol numbers, RFC 1928.
const (
	socks5Version = 5

	socks5NoAuth       = 0x00
	socks5NoAcceptable = 0xff

	socks5Connect = 1

	socks5IPv4   = 1
	socks5Domain = 3
	socks5IPv6   = 4

	socks5Succeeded          = 0x00
	socks5GeneralFailure     = 0x01
	socks5NetworkUnreachable = 0x03
	socks5HostUnreachable    = 0x04
	socks5ConnectionRefused  = 0x05
	socks5CommandUnsupported = 0x07
	socks5AddressUnsupported = 0x08
)

func (p *Proxy) handleSOCKS5(ctx context.Context, c net.Conn, t *splice.Tracker) {
	c.SetDeadline(p.handshakeDeadline())
	target, err := socks5Handshake(c)
	if err != nil {
		p.logger().Debug("proxy: socks5: bad handshake", "client", c.RemoteAddr(), "err", err)
		return
	}
	c.SetDeadline(time.Time{})
	up, err := p.dial(ctx, "tcp", target)
	if err != nil {
		code := socks5DialReply(err)
		p.logger().Debug("proxy: socks5: dial failed", "client", c.RemoteAddr(), "target", target, "reply", code, "err", err)
		writeSOCKS5Reply(c, code, nil)
		return
	}
	if err := writeSOCKS5Reply(c, socks5Succeeded, up.LocalAddr()); err != nil {
		up.Close()
		return
	}
	p.splice(c, up, t)
}

// rejectSOCKS5 answers a well-formed request with a general failure.
func (p *Proxy) rejectSOCKS5(_ context.Context, c net.Conn, _ *splice.Tracker) {
	c.SetDeadline(p.handshakeDeadline())
	if _, err := socks5Handshake(c); err == nil {
		writeSOCKS5Reply(c, socks5GeneralFailure, nil)
	}
}

// socks5Handshake runs the server side of a SOCKS5 handshake on rw up to
// the reply to the request: method negotiation, accepting only "no
// authentication", then a CONNECT request. It returns the destination as
// "host:port". It answers the requests it refuses itself; the caller
// sends the reply to a CONNECT it returns.
func socks5Handshake(rw io.ReadWriter) (string, error) {
	// Greeting: VER, NMETHODS, METHODS (RFC 1928 section 3).
	var buf [255]byte
	if _, err := io.ReadFull(rw, buf[:2]); err != nil {
		return "", fmt.Errorf("read greeting: %w", err)
	}
	if buf[0] != socks5Version {
		return "", fmt.Errorf("greeting: version %d, want %d", buf[0], socks5Version)
	}
	methods := buf[:buf[1]]
	if _, err := io.ReadFull(rw, methods); err != nil {
		return "", fmt.Errorf("read %d methods: %w", len(methods), err)
	}
	method := byte(socks5NoAcceptable)
	for _, m := range methods {
		if m == socks5NoAuth {
			method = socks5NoAuth
		}
	}
	if _, err := rw.Write([]byte{socks5Version, method}); err != nil {
		return "", fmt.Errorf("write method: %w", err)
	}
	if method == socks5NoAcceptable {
		return "", fmt.Errorf("greeting: no-authentication method not offered (methods % x)", methods)
	}

	// Request: VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT (section 4).
	if _, err := io.ReadFull(rw, buf[:4]); err != nil {
		return "", fmt.Errorf("read request: %w", err)
	}
	if buf[0] != socks5Version {
		return "", fmt.Errorf("request: version %d, want %d", buf[0], socks5Version)
	}
	if cmd := buf[1]; cmd != socks5Connect {
		writeSOCKS5Reply(rw, socks5CommandUnsupported, nil)
		return "", fmt.Errorf("request: command %d not supported (only CONNECT)", cmd)
	}
	var host string
	switch atyp := buf[3]; atyp {
	case socks5IPv4, socks5IPv6:
		n := 4
		if atyp == socks5IPv6 {
			n = 16
		}
		if _, err := io.ReadFull(rw, buf[:n]); err != nil {
			return "", fmt.Errorf("read request address: %w", err)
		}
		addr, _ := netip.AddrFromSlice(buf[:n])
		host = addr.Unmap().String()
	case socks5Domain:
		if _, err := io.ReadFull(rw, buf[:1]); err != nil {
			return "", fmt.Errorf("read request domain length: %w", err)
		}
		name := buf[:buf[0]]
		if _, err := io.ReadFull(rw, name); err != nil {
			return "", fmt.Errorf("read request domain: %w", err)
		}
		if len(name) == 0 {
			writeSOCKS5Reply(rw, socks5GeneralFailure, nil)
			return "", fmt.Errorf("request: empty domain name")
		}
		host = string(name)
	default:
		writeSOCKS5Reply(rw, socks5AddressUnsupported, nil)
		return "", fmt.Errorf("request: address type %d not supported", atyp)
	}
	if _, err := io.ReadFull(rw, buf[:2]); err != nil {
		return "", fmt.Errorf("read request port: %w", err)
	}
	port := binary.BigEndian.Uint16(buf[:2])
	return net.JoinHostPort(host, strconv.Itoa(int(port))), nil
}

// writeSOCKS5Reply writes a reply with code and the bound address, which
// is 0.0.0.0:0 unless bound is a TCP address.
func writeSOCKS5Reply(w io.Writer, code byte, bound net.Addr) error {
	ap := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if a, ok := bound.(*net.TCPAddr); ok && a.AddrPort().Addr().IsValid() {
		ap = a.AddrPort()
	}
	addr := ap.Addr().Unmap().WithZone("")
	reply := []byte{socks5Version, code, 0, socks5IPv4}
	if addr.Is6() {
		reply[3] = socks5IPv6
	}
	reply = append(reply, addr.AsSlice()...)
	reply = binary.BigEndian.AppendUint16(reply, ap.Port())
	_, err := w.Write(reply)
	return err
}

// socks5DialReply maps a dial error to a SOCKS5 reply code. A name that
// does not resolve is an unreachable host, and so is one that does not
// answer in time: RFC 1928 has no code for either.
func socks5DialReply(err error) byte {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return socks5ConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return socks5NetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.As(err, &dnsErr), isTimeout(err):
		return socks5HostUnreachable
	}
	return socks5GeneralFailure
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, syscall.ETIMEDOUT) || (errors.As(err, &ne) && ne.Timeout())
}

func (p *Proxy) handleHTTP(ctx context.Context, c net.Conn, t *splice.Tracker) {
	req, br, ok := p.readHTTPRequest(c)
	if !ok {
		return
	}
	if req.Method == http.MethodConnect {
		p.connectHTTP(ctx, c, br, req, t)
		return
	}
	p.forwardHTTP(ctx, c, req)
}

// rejectHTTP answers a request with 503 Service Unavailable.
func (p *Proxy) rejectHTTP(_ context.Context, c net.Conn, _ *splice.Tracker) {
	if _, _, ok := p.readHTTPRequest(c); ok {
		writeHTTPError(c, http.StatusServiceUnavailable, "proxy: too many connections")
	}
}

// readHTTPRequest reads a request head from c within the handshake
// timeout and maxHeaderBytes. It answers a malformed one with 400 and
// returns false. The request body, and for CONNECT the first bytes of
// the tunnel, may be buffered in the returned reader.
func (p *Proxy) readHTTPRequest(c net.Conn) (*http.Request, *bufio.Reader, bool) {
	c.SetDeadline(p.handshakeDeadline())
	limit := &io.LimitedReader{R: c, N: maxHeaderBytes}
	br := bufio.NewReader(limit)
	req, err := http.ReadRequest(br)
	if err != nil {
		p.logger().Debug("proxy: http: bad request", "client", c.RemoteAddr(), "err", err)
		switch {
		case limit.N == 0:
			writeHTTPError(c, http.StatusRequestHeaderFieldsTooLarge, "proxy: request head too large")
		case !errors.Is(err, io.EOF) && !isTimeout(err):
			writeHTTPError(c, http.StatusBadRequest, "proxy: malformed request")
		}
		return nil, nil, false
	}
	limit.N = math.MaxInt64
	c.SetDeadline(time.Time{})
	return req, br, true
}

// connectHTTP opens a CONNECT tunnel.
func (p *Proxy) connectHTTP(ctx context.Context, c net.Conn, br *bufio.Reader, req *http.Request, t *splice.Tracker) {
	target := req.URL.Host
	if _, port, err := net.SplitHostPort(target); err != nil || port == "" {
		writeHTTPError(c, http.StatusBadRequest, fmt.Sprintf("proxy: CONNECT target %q is not host:port", req.RequestURI))
		return
	}
	up, err := p.dial(ctx, "tcp", target)
	if err != nil {
		p.logger().Debug("proxy: http: CONNECT dial failed", "client", c.RemoteAddr(), "target", target, "err", err)
		writeHTTPError(c, dialStatus(err), fmt.Sprintf("proxy: dial %s: %v", target, err))
		return
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		up.Close()
		return
	}
	// A client may send the first bytes of the tunnel (a TLS
	// ClientHello) without waiting for the 200; they are in br.
	if n := br.Buffered(); n > 0 {
		early, _ := br.Peek(n)
		if _, err := up.Write(early); err != nil {
			splice.Abort(up)
			splice.Abort(c)
			return
		}
	}
	p.splice(c, up, t)
}

// forwardHTTP forwards a plain request with an absolute http:// URI on a
// connection of its own and writes the response back.
func (p *Proxy) forwardHTTP(ctx context.Context, c net.Conn, req *http.Request) {
	if !req.URL.IsAbs() || req.URL.Scheme != "http" || req.URL.Host == "" {
		writeHTTPError(c, http.StatusBadRequest,
			fmt.Sprintf("proxy: %q is not an absolute http:// URI (use CONNECT for https)", req.RequestURI))
		return
	}
	out := req.Clone(ctx)
	out.RequestURI = ""
	removeHopHeaders(out.Header)
	transport := &http.Transport{
		DialContext:        p.dial,
		DisableKeepAlives:  true,
		DisableCompression: true, // pass the client's Accept-Encoding through
	}
	defer transport.CloseIdleConnections()
	resp, err := transport.RoundTrip(out)
	if err != nil {
		p.logger().Debug("proxy: http: request failed", "client", c.RemoteAddr(), "url", req.URL.Redacted(), "err", err)
		writeHTTPError(c, dialStatus(err), fmt.Sprintf("proxy: %s %s: %v", req.Method, req.URL.Redacted(), err))
		return
	}
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	resp.Close = true
	resp.Write(c)
}

// dialStatus maps an error reaching the destination to a proxy status.
func dialStatus(err error) int {
	if isTimeout(err) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// removeHopHeaders removes the headers that apply to one connection only
// (RFC 9110 section 7.6.1), and those Connection names.
func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		h.Del(name)
	}
}

// writeHTTPError writes a complete plain-text response with status code
// and closes the exchange.
func writeHTTPError(w io.Writer, code int, msg string) error {
	body := msg + "\n"
	_, err := fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
	return err
}
