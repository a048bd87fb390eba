package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/membership"
	"github.com/weftnet/weft/netstack"
)

// freePort returns a port free for both TCP and UDP on 127.0.0.1 (gossip
// uses both on one port).
func freePort(t *testing.T) uint16 {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return uint16(port)
		}
	}
	t.Fatal("no free port")
	return 0
}

func newNode(t *testing.T, name string, key []byte, join ...string) *Node {
	t.Helper()
	return &Node{
		Name:          name,
		Join:          join,
		GossipKeys:    [][]byte{key},
		Bind:          netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(t)),
		ListenPort:    int(freePort(t)),
		Endpoint:      netip.MustParseAddr("127.0.0.1"),
		GossipProfile: "local",
		Interface:     fmt.Sprintf("wst%d%s", os.Getpid()%100000, name),
	}
}

func up(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Up(ctx); err != nil {
		t.Fatalf("%s: Up: %v", n.Name, err)
	}
	t.Cleanup(func() { n.Close() })
}

// eventually retries f every 100 ms until it succeeds or d passes.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Issue 7, test 1: two embedded nodes in one process join a mesh on
// loopback and exchange TCP and UDP through Dial and Listen, by member
// name; an exposed port reaches a kernel listener behind the other node;
// Close leaves, and the name stops resolving.
func TestTwoNodesDialListen(t *testing.T) {
	key, err := membership.GenerateGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	// A kernel service behind b, exposed on b's overlay address.
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	appPort := uint16(app.Addr().(*net.TCPAddr).Port)
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	a := newNode(t, "a", key)
	up(t, a)
	b := newNode(t, "b", key, a.Bind.String())
	b.Expose = netstack.ExposeConfig{TCP: []uint16{appPort}}
	up(t, b)
	if !a.Addr().IsValid() || a.Addr() == b.Addr() || !netip.MustParsePrefix(agent.DefaultSidecarRange).Contains(b.Addr()) {
		t.Fatalf("addresses a=%v b=%v, want two of %s", a.Addr(), b.Addr(), agent.DefaultSidecarRange)
	}
	eventually(t, 20*time.Second, "a resolves b.weft", func() error {
		ip, err := a.Resolve("b.weft")
		if err == nil && ip != b.Addr() {
			err = fmt.Errorf("b.weft is %v, b has %v", ip, b.Addr())
		}
		return err
	})

	ln, err := b.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				msg, _ := io.ReadAll(c)
				fmt.Fprintf(c, "b got %d bytes", len(msg))
			}()
		}
	}()
	pc, err := b.ListenPacket("udp", ":7001")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	payload := make([]byte, 1<<20) // spans many segments and both directions' windows
	eventually(t, 20*time.Second, "TCP a -> b.weft:7000", func() error {
		c, err := a.Dial(ctx, "tcp", "b.weft:7000")
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(payload); err != nil {
			return err
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		got, err := io.ReadAll(c)
		if err == nil && string(got) != fmt.Sprintf("b got %d bytes", len(payload)) {
			err = fmt.Errorf("answer %q", got)
		}
		return err
	})
	eventually(t, 10*time.Second, "UDP a -> b.weft:7001", func() error {
		c, err := a.Dial(ctx, "udp", "b.weft:7001")
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write([]byte("ping"))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) != "echo ping" {
			err = fmt.Errorf("answer %q", buf[:n])
		}
		return err
	})
	eventually(t, 10*time.Second, "exposed port", func() error {
		c, err := a.Dial(ctx, "tcp", netip.AddrPortFrom(b.Addr(), appPort).String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("through the forward"))
		buf := make([]byte, 64)
		n, err := io.ReadAtLeast(c, buf, len("through the forward"))
		if err == nil && string(buf[:n]) != "through the forward" {
			err = fmt.Errorf("answer %q", buf[:n])
		}
		return err
	})

	if _, err := a.Dial(ctx, "tcp", "nobody.weft:1"); err == nil {
		t.Error("dialing a member that does not exist succeeded")
	} else if dns := new(net.DNSError); !errors.As(err, &dns) || !dns.IsNotFound {
		t.Errorf("dialing nobody.weft: %v, want a not-found DNS error", err)
	}

	if err := b.Close(); err != nil {
		t.Errorf("b.Close: %v", err)
	}
	eventually(t, 10*time.Second, "b left", func() error {
		if ip, err := a.Resolve("b.weft"); err == nil {
			return fmt.Errorf("b.weft still resolves to %v", ip)
		}
		return nil
	})
	if _, err := b.Dial(ctx, "tcp", "a.weft:1"); err == nil {
		t.Error("a closed node dialed")
	}
}

// Up fails clearly on a bad configuration and without a gossip key.
func TestUpBadConfig(t *testing.T) {
	ctx := context.Background()
	if err := (&Node{}).Up(ctx); err == nil {
		t.Error("a node without a name came up")
	}
	if err := (&Node{Name: "x"}).Up(ctx); !errors.Is(err, membership.ErrNoGossipKey) {
		t.Errorf("no gossip key: %v, want ErrNoGossipKey", err)
	}
	n := &Node{Name: "x", InsecureGossip: true, SidecarRange: netip.MustParsePrefix("100.64.0.0/24")}
	if err := n.Up(ctx); err == nil {
		t.Error("a sidecar range inside the cluster range was accepted")
	}
}
