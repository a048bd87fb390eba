package netstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/tun"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wgOffset is the offset wireguard-go reads and writes packets at in its
// buffers (device.MessageTransportHeaderSize): room for its header.
const wgOffset = 16

var (
	addrA = netip.MustParseAddr("100.64.0.1")
	addrB = netip.MustParseAddr("100.64.0.2")
)

// newStack starts a stack and closes it when the test ends.
func newStack(t testing.TB, mtu int, addrs ...netip.Addr) *Stack {
	t.Helper()
	s, err := New(Config{Addresses: addrs, MTU: mtu})
	if err != nil {
		t.Fatalf("New(%v, MTU %d): %v", addrs, mtu, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newPair returns two stacks wired back to back by two pumps that move
// batches of packets between their tun.Devices the way a wireguard-go
// device does (Read a batch at wgOffset, Write it at wgOffset), minus the
// crypto and the UDP. The pumps stop when the stacks close.
func newPair(t testing.TB, addrsA, addrsB []netip.Addr) (a, b *Stack) {
	t.Helper()
	const mtu = 1420
	a = newStack(t, mtu, addrsA...)
	b = newStack(t, mtu, addrsB...)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, dir := range [][2]*Stack{{a, b}, {b, a}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- pump(dir[0], dir[1], mtu)
		}()
	}
	// Cleanups run last-in first-out: this one runs before the stacks
	// are closed by newStack's, so close them here to stop the pumps.
	t.Cleanup(func() {
		a.Close()
		b.Close()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("pump: %v", err)
			}
		}
	})
	return a, b
}

// pump moves packets from one device to the other until either closes.
func pump(from, to tun.Device, mtu int) error {
	n := from.BatchSize()
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, wgOffset+mtu)
	}
	sizes := make([]int, n)
	out := make([][]byte, 0, n)
	for {
		count, err := from.Read(bufs, sizes, wgOffset)
		if errors.Is(err, os.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		out = out[:0]
		for i := range count {
			out = append(out, bufs[i][:wgOffset+sizes[i]])
		}
		if _, err := to.Write(out, wgOffset); errors.Is(err, os.ErrClosed) {
			return nil
		} else if err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
}

// acceptOne accepts one connection from ln in the background.
func acceptOne(t *testing.T, ln net.Listener) <-chan net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Errorf("accept on %s: %v", ln.Addr(), err)
			close(ch)
			return
		}
		t.Cleanup(func() { c.Close() })
		ch <- c
	}()
	return ch
}

func TestTCPTransferBothWays(t *testing.T) {
	const size = 16 << 20
	a, b := newPair(t, []netip.Addr{addrA}, []netip.Addr{addrB})
	ln, err := b.Listen("tcp", "100.64.0.2:5001")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := acceptOne(t, ln)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := a.DialContext(ctx, "tcp", "100.64.0.2:5001")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	if server == nil {
		t.FailNow()
	}

	exchangeBoth(t, client, server, size, 60*time.Second)
}

// exchangeBoth runs exchange on both ends of a connection at once, so the
// two directions share the pumps like a real full-duplex flow, and fails
// the test unless each end received exactly what the other sent.
func exchangeBoth(t *testing.T, client, server net.Conn, size int64, timeout time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	var sums [2][2][sha256.Size]byte // [end][sent, received]
	for i, c := range []net.Conn{client, server} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetDeadline(time.Now().Add(timeout))
			sent, received, err := exchange(c, size, uint64(i))
			if err != nil {
				t.Errorf("%s -> %s: %v", c.LocalAddr(), c.RemoteAddr(), err)
			}
			sums[i] = [2][sha256.Size]byte{sent, received}
		}()
	}
	wg.Wait()
	if sums[0][0] != sums[1][1] {
		t.Errorf("client -> server: sent sha256 %x, received %x", sums[0][0], sums[1][1])
	}
	if sums[1][0] != sums[0][1] {
		t.Errorf("server -> client: sent sha256 %x, received %x", sums[1][0], sums[0][1])
	}
}

// exchange writes size pseudo-random bytes to c and closes its write side
// while reading everything c's peer sends, and returns the sha256 of both.
func exchange(c net.Conn, size int64, seed uint64) (sent, received [sha256.Size]byte, err error) {
	var wg sync.WaitGroup
	var writeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		h := sha256.New()
		data := io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), size)
		_, writeErr = io.Copy(io.MultiWriter(c, h), data)
		if writeErr == nil {
			writeErr = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		copy(sent[:], h.Sum(nil))
	}()
	h := sha256.New()
	n, readErr := io.Copy(h, c)
	copy(received[:], h.Sum(nil))
	wg.Wait()
	if err := errors.Join(writeErr, readErr); err != nil {
		return sent, received, err
	}
	if n != size {
		return sent, received, fmt.Errorf("received %d bytes, want %d", n, size)
	}
	return sent, received, nil
}

func TestUDPBothWays(t *testing.T) {
	a, b := newPair(t, []netip.Addr{addrA}, []netip.Addr{addrB})
	tests := []struct {
		name           string
		client, server *Stack
		listen, dial   string
	}{
		{"a to b", a, b, "100.64.0.2:7000", "100.64.0.2:7000"},
		{"b to a", b, a, "100.64.0.1:7000", "100.64.0.1:7000"},
		{"b to a, server on any address", b, a, ":7001", "100.64.0.1:7001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc, err := tt.server.ListenPacket("udp", tt.listen)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			go echo(pc)

			c, err := tt.client.DialContext(context.Background(), "udp", tt.dial)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 2000)
			for i := range 20 {
				msg := bytes.Repeat([]byte{byte(i)}, 100+60*i) // up to 1240 bytes
				if _, err := c.Write(msg); err != nil {
					t.Fatalf("write datagram %d: %v", i, err)
				}
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("read echo %d: %v", i, err)
				}
				if !bytes.Equal(buf[:n], msg) {
					t.Fatalf("echo %d: got %d bytes, want %d bytes of %d", i, n, len(msg), i)
				}
			}
		})
	}
}

// echo sends every datagram on pc back to where it came from until pc is
// closed.
func echo(pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if _, err := pc.WriteTo(buf[:n], from); err != nil {
			return
		}
	}
}

func TestListenAnyAddressDualStack(t *testing.T) {
	v6A := netip.MustParseAddr("fd00:64::1")
	v6B := netip.MustParseAddr("fd00:64::2")
	a, b := newPair(t, []netip.Addr{addrA, v6A}, []netip.Addr{addrB, v6B})

	ln, err := b.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln6, err := b.Listen("tcp6", ":8086")
	if err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, remote := range []string{"100.64.0.2:8080", "[fd00:64::2]:8080"} {
		c, err := a.DialContext(ctx, "tcp", remote)
		if err != nil {
			t.Fatalf("dial %s: %v", remote, err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "hi" {
			t.Errorf("from %s: got %q, %v; want \"hi\"", remote, got, err)
		}
	}
	// A tcp6 listener on any address is IPv6-only, as in package net.
	if c, err := a.DialContext(ctx, "tcp", "100.64.0.2:8086"); err == nil {
		c.Close()
		t.Errorf("dial IPv4 to tcp6 listener: connected, want refused")
	}
}

func TestDialRefusedIsPrompt(t *testing.T) {
	a, _ := newPair(t, []netip.Addr{addrA}, []netip.Addr{addrB})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := a.DialContext(ctx, "tcp", "100.64.0.2:9")
	if err == nil {
		c.Close()
		t.Fatal("dial to a closed port: connected")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial to a closed port: %v, want connection refused", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("dial to a closed port took %v, want a prompt refusal", d)
	}
}

func TestDialHonoursContext(t *testing.T) {
	// Nobody answers 100.64.0.99: the SYN goes to b, which drops it.
	a, _ := newPair(t, []netip.Addr{addrA}, []netip.Addr{addrB})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", "100.64.0.99:80")
	if err == nil {
		c.Close()
		t.Fatal("dial to a silent address: connected")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial to a silent address: %v, want deadline exceeded", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no addresses", Config{MTU: 1420}},
		{"MTU too small", Config{Addresses: []netip.Addr{addrA}, MTU: 100}},
		{"MTU too large", Config{Addresses: []netip.Addr{addrA}, MTU: 70000}},
		{"zero address", Config{Addresses: []netip.Addr{{}}, MTU: 1420}},
		{"unspecified address", Config{Addresses: []netip.Addr{netip.IPv4Unspecified()}, MTU: 1420}},
		{"duplicate address", Config{Addresses: []netip.Addr{addrA, addrA}, MTU: 1420}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("New(%+v): no error", tt.cfg)
			}
			t.Log(err)
		})
	}
}

func TestBadAddressesFail(t *testing.T) {
	s := newStack(t, 1420, addrA)
	ctx := context.Background()
	dials := []struct{ network, address string }{
		{"tcp", "example.com:80"},
		{"tcp", "100.64.0.2"},
		{"tcp", "100.64.0.2:http"},
		{"tcp", "100.64.0.2:70000"},
		{"tcp", "100.64.0.2:0"},
		{"tcp", ":80"},
		{"tcp", "0.0.0.0:80"},
		{"tcp4", "[fd00::1]:80"},
		{"udp6", "100.64.0.2:53"},
		{"tcp", "[fe80::1%eth0]:80"},
		{"sctp", "100.64.0.2:80"},
		{"ip4:icmp", "100.64.0.2"},
		{"", "100.64.0.2:80"},
	}
	for _, d := range dials {
		if c, err := s.DialContext(ctx, d.network, d.address); err == nil {
			c.Close()
			t.Errorf("DialContext(%q, %q): no error", d.network, d.address)
		} else {
			t.Logf("DialContext(%q, %q): %v", d.network, d.address, err)
		}
	}
	listens := []struct{ network, address string }{
		{"udp", ":80"},
		{"tcp", "localhost:80"},
		{"tcp", "100.64.0.2:80"}, // not one of the stack's addresses
		{"tcp6", "100.64.0.1:80"},
	}
	for _, l := range listens {
		if ln, err := s.Listen(l.network, l.address); err == nil {
			ln.Close()
			t.Errorf("Listen(%q, %q): no error", l.network, l.address)
		} else {
			t.Logf("Listen(%q, %q): %v", l.network, l.address, err)
		}
	}
	if pc, err := s.ListenPacket("tcp", ":80"); err == nil {
		pc.Close()
		t.Errorf("ListenPacket(tcp): no error")
	}
	ln, err := s.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln2, err := s.Listen("tcp", "100.64.0.1:80"); err == nil {
		ln2.Close()
		t.Errorf("second Listen on port 80: no error")
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second Listen on port 80: %v, want address in use", err)
	}
}

// A node that re-leases moves its stack to the new address: listeners on
// the new one work, the old one is gone, and a family change is refused.
func TestReplaceAddress(t *testing.T) {
	oldA, newA := netip.MustParseAddr("100.127.0.1"), netip.MustParseAddr("100.127.0.2")
	s := newStack(t, 1420, oldA)
	if err := s.ReplaceAddress(oldA, newA); err != nil {
		t.Fatal(err)
	}
	ln, err := s.Listen("tcp", netip.AddrPortFrom(newA, 80).String())
	if err != nil {
		t.Fatalf("listen on the new address: %v", err)
	}
	ln.Close()
	if ln, err := s.Listen("tcp", netip.AddrPortFrom(oldA, 80).String()); err == nil {
		ln.Close()
		t.Error("listening on the replaced address still works")
	}
	if err := s.ReplaceAddress(newA, netip.MustParseAddr("fd00::1")); err == nil {
		t.Error("an IPv4 address was replaced by an IPv6 one")
	}
	if err := s.ReplaceAddress(newA, newA); err != nil {
		t.Errorf("replacing an address with itself: %v", err)
	}
}
