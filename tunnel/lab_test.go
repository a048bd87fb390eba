package tunnel_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/tunnel"
)

// marker is plaintext that the test payload carries every 4 KiB; a capture
// of the underlay must never contain it.
const marker = "WEFT-PLAINTEXT-MARKER-7c1f"

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test creates network namespaces, veths and TUN devices")
	}
}

func newLab(t testing.TB, nodes int) *netlab.Lab {
	t.Helper()
	requireRoot(t)
	lab, err := netlab.New(context.Background(), netlab.Config{Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return lab
}

// labNode is one lab node with a weft device in it.
type labNode struct {
	*netlab.Node
	dev     tunnel.Device
	overlay netip.Addr
	port    int
}

// overlayAddr is node i's (1-based) address in the lab overlay 100.64.0.0/24.
func overlayAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}) }

func startDevice(t testing.TB, lab *netlab.Lab, i int, mode tunnel.Mode) *labNode {
	t.Helper()
	node := lab.Nodes[i-1]
	key, err := tunnel.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	ln := &labNode{Node: node, overlay: overlayAddr(i), port: 51820}
	cfg := tunnel.Config{
		Name:       "wf" + lab.ID + "-" + node.Name,
		Mode:       mode,
		PrivateKey: key,
		ListenPort: ln.port,
		Address:    netip.PrefixFrom(ln.overlay, 24),
		MTU:        1420,
	}
	err = node.Do(func() error {
		var err error
		ln.dev, err = tunnel.Open(context.Background(), cfg)
		return err
	})
	if err != nil {
		t.Fatalf("open %s device in %s: %v", mode, node.Name, err)
	}
	t.Cleanup(func() {
		if err := ln.dev.Close(); err != nil {
			t.Errorf("close %s: %v", ln.dev.Name(), err)
		}
	})
	return ln
}

func (n *labNode) asPeer() tunnel.Peer {
	return tunnel.Peer{
		PublicKey:  n.dev.PublicKey(),
		Endpoint:   netip.AddrPortFrom(n.Addr(), uint16(n.port)),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(n.overlay, 32)},
	}
}

// mesh makes every node a peer of every other.
func mesh(t testing.TB, nodes ...*labNode) {
	t.Helper()
	for _, a := range nodes {
		var peers []tunnel.Peer
		for _, b := range nodes {
			if a != b {
				peers = append(peers, b.asPeer())
			}
		}
		if err := a.dev.SetPeers(peers); err != nil {
			t.Fatal(err)
		}
	}
}

func (n *labNode) listen(t testing.TB, network string) net.Listener {
	t.Helper()
	addr := netip.AddrPortFrom(n.overlay, 0).String()
	var l net.Listener
	var err error
	if nd, ok := n.dev.(*tunnel.NetstackDevice); ok {
		l, err = nd.Stack().Listen(network, addr)
	} else {
		err = n.Do(func() error {
			var err error
			l, err = net.Listen(network, addr)
			return err
		})
	}
	if err != nil {
		t.Fatalf("listen in %s: %v", n.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func (n *labNode) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if nd, ok := n.dev.(*tunnel.NetstackDevice); ok {
		return nd.Stack().DialContext(ctx, network, addr)
	}
	var c net.Conn
	err := n.Do(func() error {
		var err error
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// payload is size bytes of seeded pseudo-random data with the marker at the
// start of every 4 KiB.
type payload struct {
	left int64
	rng  *rand.ChaCha8
	off  int
	blk  [4096]byte
}

func newPayload(size int64, seed byte) *payload {
	p := &payload{left: size, rng: rand.NewChaCha8([32]byte{seed}), off: 4096}
	return p
}

func (p *payload) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if p.off == len(p.blk) {
		p.rng.Read(p.blk[:])
		copy(p.blk[:], marker)
		p.off = 0
	}
	n := copy(b, p.blk[p.off:])
	if int64(n) > p.left {
		n = int(p.left)
	}
	p.off += n
	p.left -= int64(n)
	return n, nil
}

// transfer sends size bytes from one node to the other over TCP on the
// overlay and checks the receiver got exactly what was sent.
func transfer(t testing.TB, from, to *labNode, size int64) {
	t.Helper()
	l := to.listen(t, "tcp")
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := from.dial(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", l.Addr(), from.Name, err)
	}
	h := sha256.New()
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	n, err := io.Copy(io.MultiWriter(c, h), newPayload(size, 1))
	if err != nil {
		t.Fatalf("send: %v after %d bytes", err, n)
	}
	c.Close()
	var r result
	select {
	case r = <-got:
	case <-ctx.Done():
		t.Fatal("receiver did not finish")
	}
	if r.err != nil {
		t.Fatalf("receive: %v", r.err)
	}
	if r.n != size || fmt.Sprintf("%x", r.sum) != fmt.Sprintf("%x", h.Sum(nil)) {
		t.Fatalf("received %d bytes with sha256 %x, sent %d with %x", r.n, r.sum, size, h.Sum(nil))
	}
}

func ping(t testing.TB, from *labNode, to netip.Addr) {
	t.Helper()
	// -w: keep sending until 3 replies came back or 10 s passed; the first
	// packet to a new peer waits for a handshake, which is slow under -race.
	out, err := from.Run(context.Background(), "ping", "-c", "3", "-i", "0.2", "-w", "10", to.String())
	if err != nil {
		t.Fatalf("ping %s from %s: %v", to, from.Name, err)
	}
	if !strings.Contains(out, " 3 received") {
		t.Fatalf("ping %s from %s: fewer than 3 replies:\n%s", to, from.Name, out)
	}
}

// capture runs tcpdump on a node's interface into a pcap file until stop is
// called (or the test ends). count > 0 stops after that many packets.
func capture(t testing.TB, n *netlab.Node, iface string, count int) (file string, stop func()) {
	t.Helper()
	c, err := netlab.StartCapture(context.Background(), n, iface, filepath.Join(t.TempDir(), iface+".pcap"), count)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c.File, c.Stop
}

// pcapMatch returns the summary lines of the packets in file that match a
// tcpdump filter.
func pcapMatch(t testing.TB, file, filter string) []string {
	t.Helper()
	got, err := netlab.PcapMatch(file, filter)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func fileContains(t testing.TB, file, s string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}
