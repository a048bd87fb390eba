package tunnel_test

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/weftnet/weft/tunnel"
)

// Issue 3, tests 1 and 2: two tun devices across a veth underlay; ping; a
// 64 MiB TCP transfer whose hash matches; and a capture of the underlay
// during it that holds only WireGuard UDP and never the payload's marker.
func TestTUNTransferIsEncrypted(t *testing.T) {
	lab := newLab(t, 2)
	a := startDevice(t, lab, 1, tunnel.ModeTUN)
	b := startDevice(t, lab, 2, tunnel.ModeTUN)
	mesh(t, a, b)
	ping(t, a, b.overlay)
	ping(t, b, a.overlay)

	underlay, stopUnderlay := capture(t, a.Node, "eth0", 0)
	// The control: the same marker is visible inside the tunnel, so the
	// check below can find it when it is there.
	inside, stopInside := capture(t, a.Node, a.dev.Name(), 3000)
	const size = 64 << 20
	transfer(t, a, b, size)
	stopUnderlay()
	stopInside()

	if n := len(pcapMatch(t, underlay, "udp port 51820")); n < size/65536 {
		t.Fatalf("underlay capture has only %d WireGuard packets for a %d-byte transfer", n, size)
	}
	// Multicast group reports (IGMP, MLD) are the links' own control traffic,
	// sent whether or not weft runs; every unicast packet must be WireGuard.
	if other := pcapMatch(t, underlay, "(ip or ip6) and not udp port 51820 and not ip multicast and not ip6 multicast"); len(other) != 0 {
		t.Errorf("underlay carried %d IP packets that are not WireGuard UDP: %q", len(other), other)
	}
	if n := fileContains(t, underlay, marker); n != 0 {
		t.Errorf("underlay capture contains the plaintext marker %d times", n)
	}
	if n := fileContains(t, inside, marker); n == 0 {
		t.Errorf("control capture inside the tunnel never saw the marker: the check above proves nothing")
	}
}

// Issue 3, test 3: Debian's `wg show` reads the userspace device through its
// UAPI socket: the peer, its endpoint, a recent handshake and traffic. wgctrl
// reads the same socket.
func TestWgShowReadsUserspaceDevice(t *testing.T) {
	lab := newLab(t, 2)
	a := startDevice(t, lab, 1, tunnel.ModeTUN)
	b := startDevice(t, lab, 2, tunnel.ModeTUN)
	mesh(t, a, b)
	transfer(t, a, b, 1<<20)

	out, err := a.Run(context.Background(), "wg", "show", a.dev.Name())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"interface: " + a.dev.Name(),
		"public key: " + a.dev.PublicKey().String(),
		"listening port: 51820",
		"peer: " + b.dev.PublicKey().String(),
		"endpoint: " + b.Addr().String() + ":51820",
		"allowed ips: " + b.overlay.String() + "/32",
		"latest handshake: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("wg show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "private key: ") && !strings.Contains(out, "private key: (hidden)") {
		t.Errorf("wg show printed the private key")
	}
	m := regexp.MustCompile(`latest handshake: (\d+) seconds? ago`).FindStringSubmatch(out)
	if m == nil {
		if !strings.Contains(out, "latest handshake: Now") {
			t.Errorf("no recent handshake in:\n%s", out)
		}
	} else if s, _ := strconv.Atoi(m[1]); s > 30 {
		t.Errorf("handshake %ss ago is not recent", m[1])
	}
	m = regexp.MustCompile(`transfer: ([\d.]+) (\w+) received, ([\d.]+) (\w+) sent`).FindStringSubmatch(out)
	if m == nil || m[1] == "0" || m[3] == "0" {
		t.Errorf("no transfer counters in:\n%s", out)
	}

	// wgctrl finds the same device through the UAPI socket.
	c, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.Device(a.dev.Name())
	if err != nil {
		t.Fatalf("wgctrl: %v", err)
	}
	if len(d.Peers) != 1 || tunnel.Key(d.Peers[0].PublicKey) != b.dev.PublicKey() || d.Peers[0].TransmitBytes < 1<<20 {
		t.Errorf("wgctrl sees %+v", d.Peers)
	}
	st, err := a.dev.Stats()
	if err != nil {
		t.Fatal(err)
	}
	p, ok := st.Peer(b.dev.PublicKey())
	if !ok || p.TxBytes < 1<<20 || p.LastHandshake.IsZero() || time.Since(p.LastHandshake) > time.Minute {
		t.Errorf("Stats: %+v", st)
	}
}

// Issue 3, test 4: a netstack device in one namespace and a tun device in the
// other carry TCP both ways.
func TestNetstackToTUN(t *testing.T) {
	lab := newLab(t, 2)
	ns := startDevice(t, lab, 1, tunnel.ModeNetstack)
	tn := startDevice(t, lab, 2, tunnel.ModeTUN)
	if ns.dev.Mode() != tunnel.ModeNetstack {
		t.Fatalf("mode %s", ns.dev.Mode())
	}
	mesh(t, ns, tn)
	transfer(t, ns, tn, 16<<20)
	transfer(t, tn, ns, 16<<20)
	ping(t, tn, ns.overlay)
}

// Issue 3, test 6: SetPeers is a diff. While a stream runs to peer B, peer C
// is added (and used) and removed several times; B's session is never
// re-keyed (its handshake time stays put) and the stream never stalls.
func TestSetPeersDiffKeepsOtherSessions(t *testing.T) {
	lab := newLab(t, 3)
	a := startDevice(t, lab, 1, tunnel.ModeTUN)
	b := startDevice(t, lab, 2, tunnel.ModeTUN)
	c := startDevice(t, lab, 3, tunnel.ModeTUN)
	mesh(t, a, b, c) // then a forgets c:
	if err := a.dev.SetPeers([]tunnel.Peer{b.asPeer()}); err != nil {
		t.Fatal(err)
	}
	ping(t, a, b.overlay)
	before := peerStats(t, a, b)

	// A bounded stream a -> b that reports progress every 100 ms.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := b.listen(t, "tcp")
	go func() {
		conn, err := l.Accept()
		if err == nil {
			buf := make([]byte, 64<<10)
			for {
				if _, err := conn.Read(buf); err != nil {
					break
				}
			}
			conn.Close()
		}
	}()
	conn, err := a.dial(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stalls := make(chan time.Duration, 1)
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		buf := make([]byte, 32<<10)
		var worst time.Duration
		last := time.Now()
		for ctx.Err() == nil {
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(buf); err != nil {
				break
			}
			if d := time.Since(last); d > worst {
				worst = d
			}
			last = time.Now()
		}
		stalls <- worst
	}()

	withC := []tunnel.Peer{b.asPeer(), c.asPeer()}
	onlyB := []tunnel.Peer{b.asPeer()}
	for i := 0; i < 3; i++ {
		if err := a.dev.SetPeers(withC); err != nil {
			t.Fatal(err)
		}
		ping(t, a, c.overlay)
		if err := a.dev.SetPeers(onlyB); err != nil {
			t.Fatal(err)
		}
		st, _ := a.dev.Stats()
		if _, ok := st.Peer(c.dev.PublicKey()); ok {
			t.Fatalf("peer C still configured after removal")
		}
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	conn.Close()
	<-streamDone
	worst := <-stalls

	after := peerStats(t, a, b)
	if !after.LastHandshake.Equal(before.LastHandshake) {
		t.Errorf("B's session was re-handshaked (%v -> %v): SetPeers disturbed it", before.LastHandshake, after.LastHandshake)
	}
	if after.TxBytes <= before.TxBytes+1<<20 {
		t.Errorf("stream to B moved only %d bytes", after.TxBytes-before.TxBytes)
	}
	if worst > time.Second {
		t.Errorf("stream to B stalled for %v while C changed", worst)
	}
	t.Logf("stream moved %d MiB; worst write gap %v", (after.TxBytes-before.TxBytes)>>20, worst)
}

func peerStats(t testing.TB, n, peer *labNode) tunnel.PeerStats {
	t.Helper()
	st, err := n.dev.Stats()
	if err != nil {
		t.Fatal(err)
	}
	p, ok := st.Peer(peer.dev.PublicKey())
	if !ok {
		t.Fatalf("%s has no peer %s", n.Name, peer.Name)
	}
	return p
}

// The kernel backend, where the kernel has WireGuard.
func TestKernelBackend(t *testing.T) {
	lab := newLab(t, 2)
	var probe error
	lab.Nodes[0].Do(func() error { probe = tunnel.ProbeKernel(); return nil })
	if probe != nil {
		t.Skipf("this kernel cannot create wireguard links, so the kernel backend cannot run here: %v", probe)
	}
	a := startDevice(t, lab, 1, tunnel.ModeKernel)
	b := startDevice(t, lab, 2, tunnel.ModeTUN)
	mesh(t, a, b)
	ping(t, a, b.overlay)
	transfer(t, a, b, 8<<20)
	if p := peerStats(t, a, b); p.TxBytes == 0 {
		t.Errorf("kernel stats: %+v", p)
	}
}

func ExampleFingerprint() {
	k, _ := tunnel.ParseKey("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=")
	fmt.Println(tunnel.Fingerprint(k) != "", len(tunnel.Fingerprint(k)))
	_ = netip.Addr{}
	// Output: true 8
}
