package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftnet/weft/internal/splice"
	"github.com/weftnet/weft/netstack"
)

var (
	v6A = netip.MustParseAddr("fd00:64::1")
	v6B = netip.MustParseAddr("fd00:64::2")
)

// proxyPair returns two dual-stack stacks back to back, with an echo
// server on b port 80 and a DialFunc through a that resolves the names
// in the .weft zone the way the sidecar will: echo.weft and web.weft are
// b, anything else does not exist.
func proxyPair(t *testing.T) (a, b *netstack.Stack, dial DialFunc) {
	t.Helper()
	a, b = newPair(t, []netip.Addr{addrA, v6A}, []netip.Addr{addrB, v6B})
	ln, err := b.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	serveConns(t, ln, echoConn)
	names := map[string]string{"echo.weft": addrB.String(), "web.weft": addrB.String()}
	dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		if _, err := netip.ParseAddr(host); err != nil {
			ip, ok := names[host]
			if !ok {
				return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
			}
			address = net.JoinHostPort(ip, port)
		}
		return a.DialContext(ctx, network, address)
	}
	return a, b, dial
}

// startProxy runs serve on a kernel loopback listener until the test
// ends, then checks that it returns nil promptly, and returns the
// listener's address.
func startProxy(t *testing.T, serve func(context.Context, net.Listener) error) string {
	t.Helper()
	ln := listenLoopback(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve on %s after cancel: %v", ln.Addr(), err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("serve on %s did not return after cancel", ln.Addr())
		}
	})
	return ln.Addr().String()
}

func dialLoopback(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// socks5Request encodes a CONNECT (or cmd) request for host, an IP
// literal or a domain name.
func socks5Request(cmd byte, host string, port uint16) []byte {
	req := []byte{5, cmd, 0}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
		req = append(append(req, socks5IPv4), ip.AsSlice()...)
	} else if err == nil {
		req = append(append(req, socks5IPv6), ip.AsSlice()...)
	} else {
		req = append(append(req, socks5Domain, byte(len(host))), host...)
	}
	return binary.BigEndian.AppendUint16(req, port)
}

// socks5Open negotiates no authentication on c and sends req, and
// returns the reply code and bound address.
func socks5Open(t *testing.T, c net.Conn, req []byte) (byte, netip.AddrPort) {
	t.Helper()
	if _, err := c.Write([]byte{5, 1, socks5NoAuth}); err != nil {
		t.Fatal(err)
	}
	var method [2]byte
	if _, err := io.ReadFull(c, method[:]); err != nil {
		t.Fatalf("read method: %v", err)
	}
	if method != [2]byte{5, socks5NoAuth} {
		t.Fatalf("method reply % x, want 05 00", method)
	}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var head [4]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if head[0] != 5 || head[2] != 0 {
		t.Fatalf("reply starts % x, want 05 xx 00", head)
	}
	n := map[byte]int{socks5IPv4: 4, socks5IPv6: 16}[head[3]]
	if n == 0 {
		t.Fatalf("reply address type %d, want IPv4 or IPv6", head[3])
	}
	rest := make([]byte, n+2)
	if _, err := io.ReadFull(c, rest); err != nil {
		t.Fatalf("read reply address: %v", err)
	}
	ip, _ := netip.AddrFromSlice(rest[:n])
	return head[1], netip.AddrPortFrom(ip, binary.BigEndian.Uint16(rest[n:]))
}

func TestSOCKS5Connect(t *testing.T) {
	_, _, dial := proxyPair(t)
	addr := startProxy(t, (&Proxy{Dial: dial}).ServeSOCKS5)
	tests := []struct {
		name, host string
		wantBound  netip.Addr
	}{
		{"IPv4", "100.64.0.2", addrA},
		{"IPv6", "fd00:64::2", v6A},
		{"domain", "echo.weft", addrA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialLoopback(t, addr)
			code, bound := socks5Open(t, c, socks5Request(socks5Connect, tt.host, 80))
			if code != socks5Succeeded {
				t.Fatalf("reply %#x, want succeeded", code)
			}
			if bound.Addr() != tt.wantBound || bound.Port() == 0 {
				t.Errorf("bound address %s, want %s and a port", bound, tt.wantBound)
			}
			roundTrip(t, c, "hello "+tt.host)
		})
	}
}

func TestSOCKS5Replies(t *testing.T) {
	_, _, dial := proxyPair(t)
	addr := startProxy(t, (&Proxy{Dial: dial}).ServeSOCKS5)
	tests := []struct {
		name string
		req  []byte
		want byte
	}{
		{"refused", socks5Request(socks5Connect, "100.64.0.2", 81), socks5ConnectionRefused},
		{"unknown name", socks5Request(socks5Connect, "nope.weft", 80), socks5HostUnreachable},
		{"BIND", socks5Request(2, "100.64.0.2", 80), socks5CommandUnsupported},
		{"UDP ASSOCIATE", socks5Request(3, "100.64.0.2", 80), socks5CommandUnsupported},
		{"address type 9", []byte{5, socks5Connect, 0, 9, 1, 2, 3, 4, 0, 80}, socks5AddressUnsupported},
		{"empty domain", []byte{5, socks5Connect, 0, socks5Domain, 0, 0, 80}, socks5GeneralFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialLoopback(t, addr)
			if code, _ := socks5Open(t, c, tt.req); code != tt.want {
				t.Errorf("reply %#x, want %#x", code, tt.want)
			}
			// A failed request ends the connection.
			if rest, err := io.ReadAll(c); len(rest) != 0 || isTimeout(err) {
				t.Errorf("after the reply: read %q, %v; want the connection closed", rest, err)
			}
		})
	}
	t.Run("no acceptable method", func(t *testing.T) {
		c := dialLoopback(t, addr)
		c.Write([]byte{5, 2, 1, 2}) // GSSAPI, username/password
		got, err := io.ReadAll(c)
		if !bytes.Equal(got, []byte{5, socks5NoAcceptable}) || isTimeout(err) {
			t.Errorf("got % x, %v; want 05 ff and the connection closed", got, err)
		}
	})
}

func TestSOCKS5DialReply(t *testing.T) {
	opErr := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	tests := []struct {
		err  error
		want byte
	}{
		{opErr(os.NewSyscallError("connect", syscall.ECONNREFUSED)), socks5ConnectionRefused},
		{opErr(os.NewSyscallError("connect", syscall.EHOSTUNREACH)), socks5HostUnreachable},
		{opErr(os.NewSyscallError("connect", syscall.ENETUNREACH)), socks5NetworkUnreachable},
		{opErr(&net.DNSError{Err: "no such host", Name: "x.weft", IsNotFound: true}), socks5HostUnreachable},
		{fmt.Errorf("resolve x.weft: %w", &net.DNSError{Err: "server misbehaving", Name: "x.weft"}), socks5HostUnreachable},
		{opErr(context.DeadlineExceeded), socks5HostUnreachable},
		{opErr(os.NewSyscallError("connect", syscall.ETIMEDOUT)), socks5HostUnreachable},
		{opErr(os.NewSyscallError("connect", syscall.ECONNRESET)), socks5GeneralFailure},
		{errors.New("something else"), socks5GeneralFailure},
	}
	for _, tt := range tests {
		if got := socks5DialReply(tt.err); got != tt.want {
			t.Errorf("socks5DialReply(%v) = %#x, want %#x", tt.err, got, tt.want)
		}
	}
}

func TestSOCKS5BadInput(t *testing.T) {
	_, _, dial := proxyPair(t)
	addr := startProxy(t, (&Proxy{Dial: dial, HandshakeTimeout: 300 * time.Millisecond}).ServeSOCKS5)
	inputs := map[string][]byte{
		"nothing":               {},
		"HTTP":                  []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"SOCKS4":                {4, 1, 0, 80, 100, 64, 0, 2, 0},
		"truncated greeting":    {5},
		"zero methods":          {5, 0},
		"truncated methods":     {5, 255, 0, 1, 2},
		"truncated request":     {5, 1, 0, 5, 1},
		"request version 4":     {5, 1, 0, 4, 1, 0, 1, 100, 64, 0, 2, 0, 80},
		"huge domain truncated": append([]byte{5, 1, 0, 5, 1, 0, 3, 255}, bytes.Repeat([]byte("a"), 100)...),
		"truncated IPv6":        {5, 1, 0, 5, 1, 0, 4, 0xfd, 0, 0, 0x64},
		"missing port":          {5, 1, 0, 5, 1, 0, 1, 100, 64, 0, 2},
		"noise":                 bytes.Repeat([]byte{0xff, 0x00, 0x05, 0x03}, 4096),
	}
	for name, input := range inputs {
		t.Run(name, func(t *testing.T) {
			c := dialLoopback(t, addr)
			c.Write(input)
			c.CloseWrite()
			start := time.Now()
			_, err := io.ReadAll(c)
			if isTimeout(err) {
				t.Fatalf("server did not close the connection")
			}
			// Closing unread input resets the connection, which
			// is a close too.
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("read until close: %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("server closed after %v", d)
			}
		})
	}
	t.Run("stalled client", func(t *testing.T) {
		c := dialLoopback(t, addr)
		c.Write([]byte{5, 1}) // and nothing more, without closing
		start := time.Now()
		if _, err := io.ReadAll(c); isTimeout(err) {
			t.Fatalf("server did not close a stalled handshake")
		}
		if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
			t.Errorf("stalled handshake closed after %v, want about HandshakeTimeout 300ms", d)
		}
	})
	// The server survived all of it.
	c := dialLoopback(t, addr)
	if code, _ := socks5Open(t, c, socks5Request(socks5Connect, "echo.weft", 80)); code != socks5Succeeded {
		t.Fatalf("reply %#x after bad input, want succeeded", code)
	}
	roundTrip(t, c, "still serving")
}

func TestProxyMaxConns(t *testing.T) {
	_, _, dial := proxyPair(t)
	p := &Proxy{Dial: dial, MaxConns: 1}
	socksAddr := startProxy(t, p.ServeSOCKS5)
	httpAddr := startProxy(t, p.ServeHTTP)
	forwardAddr := startProxy(t, func(ctx context.Context, ln net.Listener) error {
		return p.ServeForward(ctx, ln, "tcp", "100.64.0.2:80")
	})

	// The one connection MaxConns allows, held open across all three
	// servers of p.
	held := dialLoopback(t, socksAddr)
	if code, _ := socks5Open(t, held, socks5Request(socks5Connect, "echo.weft", 80)); code != socks5Succeeded {
		t.Fatalf("first connection: reply %#x, want succeeded", code)
	}

	t.Run("socks5", func(t *testing.T) {
		c := dialLoopback(t, socksAddr)
		if code, _ := socks5Open(t, c, socks5Request(socks5Connect, "echo.weft", 80)); code != socks5GeneralFailure {
			t.Errorf("reply %#x beyond MaxConns, want general failure", code)
		}
	})
	t.Run("http", func(t *testing.T) {
		c := dialLoopback(t, httpAddr)
		resp := httpConnect(t, c, "100.64.0.2:80")
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("status %s beyond MaxConns, want 503", resp.Status)
		}
	})
	t.Run("forward", func(t *testing.T) {
		c := dialLoopback(t, forwardAddr)
		c.Write([]byte("hello"))
		if got, err := io.ReadAll(c); len(got) != 0 || isTimeout(err) {
			t.Errorf("read %q, %v beyond MaxConns; want the connection closed", got, err)
		}
	})

	// Ending the held connection frees its slot.
	roundTrip(t, held, "bye")
	held.Close()
	waitFor(t, "the slot to be free", func() bool { return p.active.Load() == 0 })
	c := dialLoopback(t, forwardAddr)
	roundTrip(t, c, "after the slot was freed")
}

// httpConnect sends a CONNECT for target on c and reads the response.
// Bytes of the tunnel that came with it are left in the response's
// reader, returned through resp.Body.
func httpConnect(t *testing.T, c net.Conn, target string, early ...byte) *http.Response {
	t.Helper()
	msg := fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n%s", target, target, early)
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("read CONNECT response: %v", err)
	}
	if resp.StatusCode == http.StatusOK {
		resp.Body = io.NopCloser(br) // the tunnel
	}
	return resp
}

func TestHTTPConnect(t *testing.T) {
	_, _, dial := proxyPair(t)
	addr := startProxy(t, (&Proxy{Dial: dial}).ServeHTTP)
	t.Run("tunnel", func(t *testing.T) {
		c := dialLoopback(t, addr)
		// "early" is sent with the CONNECT, before the 200, as a TLS
		// client may: it must go through the tunnel first.
		resp := httpConnect(t, c, "echo.weft:80", []byte("early ")...)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT: %s, want 200", resp.Status)
		}
		c.Write([]byte("late"))
		c.CloseWrite()
		got, err := io.ReadAll(resp.Body)
		if err != nil || string(got) != "early late" {
			t.Fatalf("through the tunnel: %q, %v; want %q", got, err, "early late")
		}
	})
	tests := []struct {
		name, target string
		want         int
	}{
		{"refused", "100.64.0.2:81", http.StatusBadGateway},
		{"unknown name", "nope.weft:80", http.StatusBadGateway},
		{"no port", "echo.weft", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialLoopback(t, addr)
			resp := httpConnect(t, c, tt.target)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.want {
				t.Errorf("CONNECT %s: %s %q, want %d", tt.target, resp.Status, body, tt.want)
			}
		})
	}
}

func TestHTTPPlainRequest(t *testing.T) {
	_, b, dial := proxyPair(t)
	ln, err := b.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s host=%s test=%q proxy-auth=%q body=%q",
			r.Method, r.URL, r.Host, r.Header.Get("X-Test"), r.Header.Get("Proxy-Authorization"), body)
	})}
	served := make(chan struct{})
	go func() {
		defer close(served)
		web.Serve(ln)
	}()
	t.Cleanup(func() {
		web.Close()
		<-served
	})
	addr := startProxy(t, (&Proxy{Dial: dial}).ServeHTTP)

	proxyURL := &url.URL{Scheme: "http", Host: addr, User: url.UserPassword("u", "p")}
	transport := &http.Transport{Proxy: http.ProxyURL(proxyURL), DisableKeepAlives: true}
	t.Cleanup(transport.CloseIdleConnections)
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	tests := []struct {
		method, url, body string
		want              string
	}{
		{"GET", "http://web.weft:8080/hello?x=1", "",
			`GET /hello?x=1 host=web.weft:8080 test="yes" proxy-auth="" body=""`},
		{"POST", "http://100.64.0.2:8080/post", "payload",
			`POST /post host=100.64.0.2:8080 test="yes" proxy-auth="" body="payload"`},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, tt.url, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Test", "yes")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || string(got) != tt.want {
				t.Errorf("%s %s: %s %q, want 200 %q", tt.method, tt.url, resp.Status, got, tt.want)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		resp, err := client.Get("http://100.64.0.2:8081/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("GET to a closed port: %s, want 502", resp.Status)
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		for _, raw := range []string{
			"GET /not-absolute HTTP/1.1\r\nHost: web.weft\r\n\r\n",
			"GET https://web.weft/ HTTP/1.1\r\nHost: web.weft\r\n\r\n",
			"NONSENSE\r\n\r\n",
			"GET http://web.weft/ HTTP/1.1\r\nX: " + strings.Repeat("a", maxHeaderBytes) + "\r\n\r\n",
		} {
			c := dialLoopback(t, addr)
			io.WriteString(c, raw)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Errorf("%.30q: read response: %v", raw, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 4 {
				t.Errorf("%.30q: %s, want a 4xx", raw, resp.Status)
			}
		}
	})
}

func TestServeForward(t *testing.T) {
	_, _, dial := proxyPair(t)
	p := &Proxy{Dial: dial}
	addr := startProxy(t, func(ctx context.Context, ln net.Listener) error {
		return p.ServeForward(ctx, ln, "tcp", "100.64.0.2:80")
	})
	for i := range 3 {
		roundTrip(t, dialLoopback(t, addr), fmt.Sprintf("forwarded %d", i))
	}

	t.Run("target refuses", func(t *testing.T) {
		addr := startProxy(t, func(ctx context.Context, ln net.Listener) error {
			return p.ServeForward(ctx, ln, "tcp", "100.64.0.2:81")
		})
		// The reset may come before connect has returned.
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("connection to a forward whose target refuses: %v, want connection reset", err)
		}
	})
	t.Run("bad network", func(t *testing.T) {
		ln := listenLoopback(t)
		if err := p.ServeForward(context.Background(), ln, "udp", "100.64.0.2:53"); err == nil {
			t.Errorf("ServeForward udp: no error")
		}
	})
}

// TestProxyCarriesResets checks that a reset on either side of a proxied
// connection reaches the other side as a reset, not as a clean close.
func TestProxyCarriesResets(t *testing.T) {
	for _, resetter := range []string{"client", "server"} {
		t.Run(resetter+" resets", func(t *testing.T) {
			server := listenLoopback(t)
			accepted := acceptOne(t, server)
			var d net.Dialer
			addr := startProxy(t, func(ctx context.Context, ln net.Listener) error {
				return (&Proxy{Dial: d.DialContext}).ServeForward(ctx, ln, "tcp", server.Addr().String())
			})
			client := dialLoopback(t, addr)
			up := <-accepted
			if up == nil {
				t.FailNow()
			}
			// Exchange a byte first, so the splice is running.
			client.Write([]byte("x"))
			if _, err := io.ReadFull(up, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			from, to := net.Conn(client), up
			if resetter == "server" {
				from, to = up, client
			}
			from.(*net.TCPConn).SetLinger(0)
			from.Close()
			to.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := to.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("read on the other side: %v, want connection reset", err)
			}
		})
	}
}

// TestProxyServeStops checks that cancelling the context of each Serve
// method closes the listener and the connections in progress and
// returns, leaving no goroutine behind.
func TestProxyServeStops(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	_, _, dial := proxyPair(t)
	p := &Proxy{Dial: dial}
	servers := map[string]struct {
		serve func(context.Context, net.Listener) error
		open  func(t *testing.T, c *net.TCPConn)
	}{
		"socks5": {p.ServeSOCKS5, func(t *testing.T, c *net.TCPConn) {
			if code, _ := socks5Open(t, c, socks5Request(socks5Connect, "echo.weft", 80)); code != socks5Succeeded {
				t.Fatalf("reply %#x", code)
			}
		}},
		"http": {p.ServeHTTP, func(t *testing.T, c *net.TCPConn) {
			if resp := httpConnect(t, c, "echo.weft:80"); resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT: %s", resp.Status)
			}
		}},
		"forward": {func(ctx context.Context, ln net.Listener) error {
			return p.ServeForward(ctx, ln, "tcp", "100.64.0.2:80")
		}, func(*testing.T, *net.TCPConn) {}},
	}
	for name, s := range servers {
		t.Run(name, func(t *testing.T) {
			ln := listenLoopback(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.serve(ctx, ln) }()

			c := dialLoopback(t, ln.Addr().String())
			s.open(t, c)
			// A client still in its handshake, too.
			stalled := dialLoopback(t, ln.Addr().String())
			stalled.Write([]byte{5})

			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve after cancel: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("serve did not return after cancel")
			}
			for _, c := range []net.Conn{c, stalled} {
				if _, err := io.ReadAll(c); isTimeout(err) {
					t.Errorf("connection from %s still open after serve returned", c.LocalAddr())
				}
			}
			if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
				c.Close()
				t.Errorf("listener still accepting after serve returned")
			}
		})
	}
}

// scriptConn is a client connection made of a fixed input, so that a fuzz
// input ends in EOF like a client's half-close, and what the server
// writes is recorded. Unlike net.Pipe, it needs no reader on the other
// side and cannot block.
type scriptConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *scriptConn) Read(b []byte) (int, error)       { return c.in.Read(b) }
func (c *scriptConn) Write(b []byte) (int, error)      { return c.out.Write(b) }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzSOCKS5Handshake feeds arbitrary client bytes to the SOCKS5 server.
// It must not panic or hang, and what it writes must be a valid server
// side of the protocol: a method selection, then at most one reply,
// which is "connection refused" (every dial is) only for a CONNECT.
func FuzzSOCKS5Handshake(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 100, 64, 0, 2, 0, 80})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 9, 'e', 'c', 'h', 'o', '.', 'w', 'e', 'f', 't', 0, 80})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 4, 0xfd, 0, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 80})
	f.Add([]byte{5, 2, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 1})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 0, 0, 80})
	f.Add([]byte{5, 0})
	f.Add([]byte{4, 1, 0, 80})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	var dials int
	p := &Proxy{Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		dials++
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}}
	f.Fuzz(func(t *testing.T, input []byte) {
		dials = 0
		c := &scriptConn{in: bytes.NewReader(input)}
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.handleSOCKS5(context.Background(), c, new(splice.Tracker))
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("handler did not return on input % x", input)
		}
		out := c.out.Bytes()
		if len(out) == 0 {
			return
		}
		if len(out) < 2 || out[0] != 5 || (out[1] != socks5NoAuth && out[1] != socks5NoAcceptable) {
			t.Fatalf("method selection % x, want 05 00 or 05 ff", out)
		}
		reply := out[2:]
		if out[1] == socks5NoAcceptable || len(reply) == 0 {
			if len(reply) != 0 || dials != 0 {
				t.Fatalf("after method % x: wrote % x and dialed %d times", out[:2], reply, dials)
			}
			return
		}
		want := map[byte]bool{socks5ConnectionRefused: true, socks5CommandUnsupported: true,
			socks5AddressUnsupported: true, socks5GeneralFailure: true}
		if len(reply) != 10 || reply[0] != 5 || !want[reply[1]] || !bytes.Equal(reply[2:], []byte{0, socks5IPv4, 0, 0, 0, 0, 0, 0}) {
			t.Fatalf("reply % x, want 05 <failure> 00 01 and 0.0.0.0:0", reply)
		}
		if (reply[1] == socks5ConnectionRefused) != (dials == 1) {
			t.Fatalf("reply %#x after %d dials", reply[1], dials)
		}
	})
}
