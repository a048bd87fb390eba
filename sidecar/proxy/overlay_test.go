package proxy

// The proxy dials the overlay through a netstack Stack in the sidecar; the
// tests do the same, through two stacks wired back to back. These helpers
// are netstack's own test helpers (netstack_test.go, forward_test.go),
// which a test of another package cannot import.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/weftnet/weft/netstack"
)

// wgOffset is the offset wireguard-go reads and writes packets at in its
// buffers (device.MessageTransportHeaderSize): room for its header.
const wgOffset = 16

var (
	addrA = netip.MustParseAddr("100.64.0.1")
	addrB = netip.MustParseAddr("100.64.0.2")
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newStack starts a stack and closes it when the test ends.
func newStack(t testing.TB, mtu int, addrs ...netip.Addr) *netstack.Stack {
	t.Helper()
	s, err := netstack.New(netstack.Config{Addresses: addrs, MTU: mtu})
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
func newPair(t testing.TB, addrsA, addrsB []netip.Addr) (a, b *netstack.Stack) {
	t.Helper()
	const mtu = 1420
	a = newStack(t, mtu, addrsA...)
	b = newStack(t, mtu, addrsB...)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, dir := range [][2]*netstack.Stack{{a, b}, {b, a}} {
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

// roundTrip writes msg to c, an echo, half-closes and checks that msg
// comes back.
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
