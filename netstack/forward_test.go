package netstack

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// exposePair returns stacks a and b joined back to back, with cfg exposed
// on b: a plays the overlay client, b the sidecar.
func exposePair(t *testing.T, cfg ExposeConfig) (a, b *Stack) {
	t.Helper()
	a, b = newPair(t, []netip.Addr{addrA}, []netip.Addr{addrB})
	if err := b.Expose(cfg); err != nil {
		t.Fatalf("Expose(%+v): %v", cfg, err)
	}
	return a, b
}

// targets returns an ExposeConfig.Target that forwards the ports in m to
// their kernel addresses and refuses every other port.
func targets(m map[uint16]string) func(string, uint16) string {
	return func(_ string, port uint16) string { return m[port] }
}

// listenLoopback listens on a free TCP port of the kernel's loopback
// until the test ends.
func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// closedLoopbackPort returns a loopback address nothing listens on.
func closedLoopbackPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// serveConns runs handle on every connection ln accepts until the test
// ends, then closes ln and the connections and waits for the handlers.
func serveConns(t *testing.T, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// echoConn sends back everything c receives, then closes.
func echoConn(c net.Conn) { io.Copy(c, c) }

// waitFor polls cond until it holds, failing the test after a few
// seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dialB dials b's address at port from a within a few seconds.
func dialB(t *testing.T, a *Stack, network string, port uint16) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, network, netip.AddrPortFrom(addrB, port).String())
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestForwardTCPTransfer(t *testing.T) {
	const size = 4 << 20
	app := listenLoopback(t)
	a, b := exposePair(t, ExposeConfig{TCP: []uint16{80}, Target: targets(map[uint16]string{80: app.Addr().String()})})
	accepted := acceptOne(t, app)

	client, err := dialB(t, a, "tcp", 80)
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.FailNow()
	}
	exchangeBoth(t, client, server, size, 30*time.Second)
	if got := b.ForwardStats(); got.TCPTotal != 1 {
		t.Errorf("ForwardStats().TCPTotal = %d, want 1", got.TCPTotal)
	}
	// Both ends closed their write halves and read EOF: the splice is
	// done and gives its slot back.
	client.Close()
	server.Close()
	waitFor(t, "ActiveTCP to return to 0", func() bool { return b.ForwardStats().ActiveTCP == 0 })
}

func TestForwardTCPHalfClose(t *testing.T) {
	app := listenLoopback(t)
	// The app answers only after the request has ended, as an HTTP/1.0
	// server or a "read all, then reply" RPC would.
	serveConns(t, app, func(c net.Conn) {
		req, err := io.ReadAll(c)
		if err != nil {
			t.Errorf("app: read request: %v", err)
			return
		}
		c.Write(append([]byte("reply to "), req...))
	})
	a, _ := exposePair(t, ExposeConfig{TCP: []uint16{80}, Target: targets(map[uint16]string{80: app.Addr().String()})})

	c, err := dialB(t, a, "tcp", 80)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read reply after half-close: %v", err)
	}
	if string(got) != "reply to request" {
		t.Errorf("reply = %q, want %q", got, "reply to request")
	}
}

func TestForwardTCPRefused(t *testing.T) {
	app := listenLoopback(t)
	serveConns(t, app, echoConn)
	a, b := exposePair(t, ExposeConfig{
		TCP: []uint16{80, 81, 82},
		Target: targets(map[uint16]string{
			80: app.Addr().String(),
			81: closedLoopbackPort(t),
			// 82 maps to "": refused by Target.
		}),
	})
	tests := []struct {
		name        string
		port        uint16
		wantRefused uint64 // increase of ForwardStats().Refused
	}{
		{"exposed port, app not listening", 81, 1},
		{"exposed port, Target returns nothing", 82, 0},
		{"port not exposed", 443, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := b.ForwardStats().Refused
			start := time.Now()
			c, err := dialB(t, a, "tcp", tt.port)
			if err == nil {
				c.Close()
				t.Fatalf("dial port %d: connected, want refused", tt.port)
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial port %d: %v, want connection refused", tt.port, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("dial port %d: refused after %v, want promptly", tt.port, d)
			}
			if got := b.ForwardStats().Refused - before; got != tt.wantRefused {
				t.Errorf("Refused increased by %d, want %d", got, tt.wantRefused)
			}
		})
	}
	// The exposed port next to them works.
	c, err := dialB(t, a, "tcp", 80)
	if err != nil {
		t.Fatalf("dial exposed port 80: %v", err)
	}
	roundTrip(t, c, "still forwarding")
}

// roundTrip writes msg to c, an echo, half-closes and checks that msg
// comes back.
// isTimeout reports whether err is a timeout, however the dialer or the
// connection said so.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, syscall.ETIMEDOUT) || (errors.As(err, &ne) && ne.Timeout())
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		t.Fatalf("echo = %q, %v; want %q", got, err, msg)
	}
}

func TestForwardTCPReset(t *testing.T) {
	t.Run("app resets", func(t *testing.T) {
		app := listenLoopback(t)
		a, _ := exposePair(t, ExposeConfig{TCP: []uint16{80}, Target: targets(map[uint16]string{80: app.Addr().String()})})
		accepted := acceptOne(t, app)
		client, err := dialB(t, a, "tcp", 80)
		if err != nil {
			t.Fatal(err)
		}
		server := <-accepted
		if server == nil {
			t.FailNow()
		}
		server.(*net.TCPConn).SetLinger(0)
		server.Close() // RST

		client.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = client.Read(make([]byte, 10))
		if err == nil || errors.Is(err, io.EOF) || isTimeout(err) {
			t.Fatalf("overlay client read after the app reset: %v, want connection reset", err)
		}
		t.Logf("overlay client read: %v", err)
	})
	t.Run("overlay client resets", func(t *testing.T) {
		app := listenLoopback(t)
		a, _ := exposePair(t, ExposeConfig{TCP: []uint16{80}, Target: targets(map[uint16]string{80: app.Addr().String()})})
		accepted := acceptOne(t, app)
		client, err := dialB(t, a, "tcp", 80)
		if err != nil {
			t.Fatal(err)
		}
		server := <-accepted
		if server == nil {
			t.FailNow()
		}
		// The client closes with unread data, which resets the
		// connection (RFC 2525 section 2.17), as Linux does.
		if _, err := server.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		client.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(client, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		client.Close()

		server.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = server.Read(make([]byte, 10))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("app read after the overlay client reset: %v, want connection reset", err)
		}
	})
}

func TestForwardMaxConns(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		app := listenLoopback(t)
		serveConns(t, app, echoConn)
		a, b := exposePair(t, ExposeConfig{TCP: []uint16{80}, MaxConns: 2, Target: targets(map[uint16]string{80: app.Addr().String()})})
		var open []net.Conn
		for i := range 2 {
			c, err := dialB(t, a, "tcp", 80)
			if err != nil {
				t.Fatalf("connection %d of 2: %v", i, err)
			}
			open = append(open, c)
		}
		c, err := dialB(t, a, "tcp", 80)
		if err == nil {
			t.Fatalf("connection 3 of MaxConns 2: connected, want refused")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connection 3 of MaxConns 2: %v, want connection refused", err)
		}
		// The client's handshake completes a moment before the
		// forwarder counts the connection as active.
		waitFor(t, "ActiveTCP 2", func() bool { return b.ForwardStats().ActiveTCP == 2 })
		if got := b.ForwardStats(); got.Refused != 1 {
			t.Errorf("ForwardStats() = %+v, want Refused 1", got)
		}
		// Ending one connection frees its slot.
		roundTrip(t, open[0], "bye")
		waitFor(t, "ActiveTCP to drop to 1", func() bool { return b.ForwardStats().ActiveTCP == 1 })
		c, err = dialB(t, a, "tcp", 80)
		if err != nil {
			t.Fatalf("connection after one ended: %v", err)
		}
		roundTrip(t, c, "again")
	})
	t.Run("udp", func(t *testing.T) {
		app := listenUDPEcho(t)
		a, b := exposePair(t, ExposeConfig{UDP: []uint16{53}, MaxConns: 1, Target: targets(map[uint16]string{53: app})})
		first, err := dialB(t, a, "udp", 53)
		if err != nil {
			t.Fatal(err)
		}
		if err := udpEcho(first, []byte("first"), 5*time.Second); err != nil {
			t.Fatalf("first flow: %v", err)
		}
		second, err := dialB(t, a, "udp", 53)
		if err != nil {
			t.Fatal(err)
		}
		if err := udpEcho(second, []byte("second"), 300*time.Millisecond); err == nil {
			t.Fatalf("second flow of MaxConns 1: echoed, want dropped")
		}
		if got := b.ForwardStats(); got.ActiveUDP != 1 || got.Refused == 0 {
			t.Errorf("ForwardStats() = %+v, want ActiveUDP 1, Refused > 0", got)
		}
	})
}

// listenUDPEcho runs a UDP echo server on the kernel's loopback until the
// test ends and returns its address.
func listenUDPEcho(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		echo(pc)
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().String()
}

// udpEcho sends msg on c and checks that it comes back within timeout.
func udpEcho(c net.Conn, msg []byte, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, maxDatagram)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !bytes.Equal(buf[:n], msg) {
		return errors.New("echo of " + strconv.Itoa(len(msg)) + " bytes came back as " + strconv.Itoa(n) + " different bytes")
	}
	return nil
}

func TestForwardUDP(t *testing.T) {
	const idle = 300 * time.Millisecond
	app := listenUDPEcho(t)
	a, b := exposePair(t, ExposeConfig{UDP: []uint16{53}, UDPIdle: idle, Target: targets(map[uint16]string{53: app})})

	c, err := dialB(t, a, "udp", 53)
	if err != nil {
		t.Fatal(err)
	}
	// 8000 bytes is fragmented on the overlay (MTU 1420) and must come
	// through whole.
	for _, size := range []int{1, 100, 1200, 8000} {
		if err := udpEcho(c, bytes.Repeat([]byte{byte(size)}, size), 5*time.Second); err != nil {
			t.Fatalf("echo of %d bytes: %v", size, err)
		}
	}
	if got := b.ForwardStats(); got.ActiveUDP != 1 || got.UDPTotal != 1 {
		t.Errorf("ForwardStats() = %+v, want ActiveUDP 1, UDPTotal 1", got)
	}

	// Traffic keeps the flow open past the idle time...
	last := time.Now()
	var maxGap time.Duration
	for start := time.Now(); time.Since(start) < 2*idle; {
		time.Sleep(idle / 6)
		if err := udpEcho(c, []byte("keepalive"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		maxGap = max(maxGap, time.Since(last))
		last = time.Now()
	}
	got := b.ForwardStats()
	switch {
	case maxGap >= idle*3/4:
		// The machine stalled the test for most of UDPIdle.
		t.Logf("keepalive gap of %v on a busy machine: not checking that traffic keeps the flow", maxGap)
	case got.ActiveUDP != 1 || got.UDPTotal != 1:
		t.Errorf("after traffic every %v at most: ForwardStats() = %+v, want the same single flow", maxGap, got)
	}
	// ...silence closes it...
	quiet := time.Now()
	total := b.ForwardStats().UDPTotal
	waitFor(t, "the idle flow to close", func() bool { return b.ForwardStats().ActiveUDP == 0 })
	if d := time.Since(quiet); d < idle*3/4 {
		t.Errorf("flow closed %v after the last datagram, want about UDPIdle %v", d, idle)
	}
	// ...and the next datagram starts a new one.
	if err := udpEcho(c, []byte("new flow"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := b.ForwardStats(); got.ActiveUDP != 1 || got.UDPTotal != total+1 {
		t.Errorf("ForwardStats() = %+v, want ActiveUDP 1, UDPTotal %d", got, total+1)
	}
}

func TestForwardUDPUnexposedPort(t *testing.T) {
	app := listenUDPEcho(t)
	a, b := exposePair(t, ExposeConfig{UDP: []uint16{53}, Target: targets(map[uint16]string{53: app})})
	c, err := dialB(t, a, "udp", 54)
	if err != nil {
		t.Fatal(err)
	}
	// b answers with ICMP port unreachable. gVisor records it as the
	// socket's error without waking a blocked Read, so the next Read
	// after it arrives returns it, as "connection refused".
	for range 20 {
		err = udpEcho(c, []byte("anyone?"), 100*time.Millisecond)
		if !isTimeout(err) {
			break
		}
	}
	if err == nil || isTimeout(err) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("datagrams to an unexposed port: %v, want connection refused", err)
	}
	if n := b.stack.Stats().ICMP.V4.PacketsSent.DstUnreachable.Value(); n == 0 {
		t.Errorf("b sent no ICMP destination unreachable")
	}
	if got := b.ForwardStats(); got != (ForwardStats{}) {
		t.Errorf("ForwardStats() = %+v, want zero", got)
	}
}

func TestForwardCloseStopsEverything(t *testing.T) {
	// Registered first, so it runs after every other cleanup.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	app := listenLoopback(t)
	accepted := acceptOne(t, app)
	udpApp := listenUDPEcho(t)
	a, b := exposePair(t, ExposeConfig{
		TCP:    []uint16{80},
		UDP:    []uint16{53},
		Target: targets(map[uint16]string{80: app.Addr().String(), 53: udpApp}),
	})
	if _, err := dialB(t, a, "tcp", 80); err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.FailNow()
	}
	flow, err := dialB(t, a, "udp", 53)
	if err != nil {
		t.Fatal(err)
	}
	if err := udpEcho(flow, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one TCP connection and one UDP flow", func() bool {
		got := b.ForwardStats()
		return got.ActiveTCP == 1 && got.ActiveUDP == 1
	})

	b.Close()
	// Close waited for the forwarder: nothing is left running.
	if g := forwarderGoroutines(); len(g) > 0 {
		t.Errorf("forwarder goroutines left after Close:\n%s", strings.Join(g, "\n\n"))
	}
	if got := b.ForwardStats(); got.ActiveTCP != 0 || got.ActiveUDP != 0 {
		t.Errorf("after Close: ForwardStats() = %+v, want nothing active", got)
	}
	// The app's connection was aborted, not left open.
	server.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := server.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("app read after Close: %v, want connection reset", err)
	}
	if err := b.Expose(ExposeConfig{TCP: []uint16{80}}); err == nil {
		t.Errorf("Expose after Close: no error")
	}
}

func TestForwardCloseEndsDials(t *testing.T) {
	// The target's accept queue is full, so the kernel drops the
	// forwarder's SYN and its dial hangs; only Close can end it.
	target := fullLoopbackListener(t)
	// DialTimeout is long enough to tell a cancelled dial from one
	// that timed out, short enough for a failure not to hang the test.
	const dialTimeout = 3 * time.Second
	a, b := exposePair(t, ExposeConfig{TCP: []uint16{80}, DialTimeout: dialTimeout, Target: targets(map[uint16]string{80: target})})
	dialed := make(chan error, 1)
	go func() {
		c, err := a.DialContext(context.Background(), "tcp", "100.64.0.2:80")
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	waitFor(t, "the forwarder to dial", func() bool { return b.forward.Load().slots.Load() == 1 })

	start := time.Now()
	b.Close()
	if d := time.Since(start); d > dialTimeout/2 {
		t.Errorf("Close took %v with a dial in progress, want it to cancel the dial", d)
	}
	if g := forwarderGoroutines(); len(g) > 0 {
		t.Errorf("forwarder goroutines left after Close:\n%s", strings.Join(g, "\n\n"))
	}
	a.Close()
	if err := <-dialed; err == nil {
		t.Errorf("overlay dial to a forward that never connected: connected")
	}
}

func TestForwardCloseEndsHandshakes(t *testing.T) {
	// A lone stack gets a SYN that nobody will ever ACK: the forwarder
	// dials the app, answers SYN-ACK and waits in the handshake.
	app := listenLoopback(t)
	accepted := acceptOne(t, app)
	b := newStack(t, 1420, addrB)
	if err := b.Expose(ExposeConfig{TCP: []uint16{80}, Target: targets(map[uint16]string{80: app.Addr().String()})}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write([][]byte{tcpSYN(addrA, 40000, addrB, 80)}, 0); err != nil {
		t.Fatal(err)
	}
	if <-accepted == nil {
		t.FailNow()
	}
	bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	if _, err := b.Read(bufs, sizes, 0); err != nil { // the SYN-ACK
		t.Fatal(err)
	}
	if flags := header.TCP(header.IPv4(bufs[0][:sizes[0]]).Payload()).Flags(); flags != header.TCPFlagSyn|header.TCPFlagAck {
		t.Fatalf("answer to the SYN has flags %s, want SYN-ACK", flags)
	}

	closed := make(chan struct{})
	go func() {
		defer close(closed)
		b.Close()
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a forwarder's handshake in progress")
	}
	if g := forwarderGoroutines(); len(g) > 0 {
		t.Errorf("forwarder goroutines left after Close:\n%s", strings.Join(g, "\n\n"))
	}
}

// tcpSYN returns an IPv4 TCP SYN from src to dst.
func tcpSYN(src netip.Addr, srcPort uint16, dst netip.Addr, dstPort uint16) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)),
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(src.As4()),
		DstAddr:     tcpip.AddrFrom4(dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(ip.Payload())
	tcp.Encode(&header.TCPFields{
		SrcPort:    srcPort,
		DstPort:    dstPort,
		SeqNum:     1,
		DataOffset: header.TCPMinimumSize,
		Flags:      header.TCPFlagSyn,
		WindowSize: 65535,
	})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), header.TCPMinimumSize)
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return pkt
}

// fullLoopbackListener returns the address of a loopback listener whose
// accept queue is full, so that connecting to it hangs.
func fullLoopbackListener(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4(sa.(*syscall.SockaddrInet4).Addr), uint16(sa.(*syscall.SockaddrInet4).Port)).String()
	for range 16 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // queue full
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("the accept queue of %s did not fill", addr)
	return ""
}

// forwarderGoroutines returns the stacks of the goroutines still in the
// forwarder's code. Unlike goleak, it does not wait for blocked ones, so
// it catches a Close that returns before its goroutines are done. It
// waits a moment for runnable ones only: a goroutine that has called
// the WaitGroup's Done may still be returning.
func forwarderGoroutines() []string {
	deadline := time.Now().Add(time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var found []string
		blocked := false
		for _, g := range strings.Split(string(buf), "\n\n") {
			for _, fn := range []string{"netstack.(*forwarder).", "netstack.(*udpFlow).", "splice.Conns(", "splice.copyHalf("} {
				if strings.Contains(g, fn) {
					found = append(found, g)
					head, _, _ := strings.Cut(g, "\n")
					blocked = blocked || !strings.Contains(head, "[runnable") && !strings.Contains(head, "[running")
					break
				}
			}
		}
		if len(found) == 0 || blocked || time.Now().After(deadline) {
			return found
		}
		time.Sleep(time.Millisecond)
	}
}

func TestExposeRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  ExposeConfig
	}{
		{"TCP port 0", ExposeConfig{TCP: []uint16{80, 0}}},
		{"UDP port 0", ExposeConfig{UDP: []uint16{0}}},
		{"negative MaxConns", ExposeConfig{MaxConns: -1}},
		{"negative UDPIdle", ExposeConfig{UDPIdle: -time.Second}},
		{"negative DialTimeout", ExposeConfig{DialTimeout: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, 1420, addrB)
			if err := s.Expose(tt.cfg); err == nil {
				t.Fatalf("Expose(%+v): no error", tt.cfg)
			} else {
				t.Log(err)
			}
		})
	}
	s := newStack(t, 1420, addrB)
	if err := s.Expose(ExposeConfig{TCP: []uint16{80}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Expose(ExposeConfig{TCP: []uint16{81}}); err == nil {
		t.Errorf("second Expose: no error")
	}
}
