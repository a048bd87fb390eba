package labtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/harness/faults"
)

// Issue 6, test 5: with 10 % loss and 20 ms latency on every node's
// underlay (each packet between two nodes delayed once and lost with 10 %
// chance), three agents still form the full mesh, handshakes included, and
// a multi-MiB TCP transfer over the overlay arrives intact.
func TestLossyUnderlayStillMeshes(t *testing.T) {
	const (
		delay = 20 * time.Millisecond
		loss  = 10.0
		size  = 8 << 20
	)
	lab := newLab(t, 3)
	ctx := context.Background()
	for _, n := range lab.Nodes {
		if err := faults.SetNetem(ctx, lab, n, delay, loss); err != nil {
			t.Fatal(err)
		}
	}
	// The underlay really is that bad: a burst of pings (each crossing two
	// shaped egresses) sees the loss and twice the latency.
	out, _ := lab.Nodes[0].Command(ctx, "ping", "-n", "-q", "-c", "100", "-i", "0.01", "-W", "1", lab.Nodes[1].Addr().String()).CombinedOutput()
	m := pingSummary.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("ping across the underlay: %s", out)
	}
	if rtt, _ := strconv.ParseFloat(m[2], 64); m[1] == "0" || rtt < 2*float64(delay.Milliseconds()) {
		t.Fatalf("netem not in effect: %s%% lost, fastest round trip %s ms", m[1], m[2])
	}
	t.Logf("underlay n1 -> n2 under netem: %s%% of pings lost, fastest round trip %s ms", m[1], m[2])

	key := writeGossipKey(t)
	start := time.Now()
	n1 := startAgent(t, lab, lab.Nodes[0], key, nil)
	n2 := startAgent(t, lab, lab.Nodes[1], key, lab.Nodes[0])
	n3 := startAgent(t, lab, lab.Nodes[2], key, lab.Nodes[0])
	eventually(t, 120*time.Second, "3 agents meshed over a lossy underlay", func() error { return meshed(n1, n2, n3) })
	t.Logf("mesh of 3 with handshakes formed in %v", time.Since(start).Round(time.Millisecond))

	src, err := n1.address()
	if err != nil {
		t.Fatal(err)
	}
	dst, err := n3.address()
	if err != nil {
		t.Fatal(err)
	}
	l, err := lab.Nodes[2].Listen("tcp", netip.AddrPortFrom(dst, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		n   int64
		sum [32]byte
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
		c.SetReadDeadline(time.Now().Add(3 * time.Minute))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		r.n, r.err = n, err
		copy(r.sum[:], h.Sum(nil))
		got <- r
	}()
	payload := make([]byte, size)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	var conn net.Conn
	eventually(t, 60*time.Second, "transfer connects", func() error {
		return lab.Nodes[0].Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 5 * time.Second}
			var err error
			conn, err = d.Dial("tcp", l.Addr().String())
			return err
		})
	})
	sent := time.Now()
	conn.SetWriteDeadline(time.Now().Add(3 * time.Minute))
	if _, err := conn.Write(payload); err != nil {
		t.Fatalf("send: %v", err)
	}
	conn.Close()
	var r result
	select {
	case r = <-got:
	case <-time.After(4 * time.Minute):
		t.Fatal("transfer did not finish in 4 minutes")
	}
	if r.err != nil {
		t.Fatalf("receive: %v after %d bytes", r.err, r.n)
	}
	if r.n != size || r.sum != want {
		t.Fatalf("received %d bytes, sha256 %x; sent %d, sha256 %x", r.n, r.sum, size, want)
	}
	el := time.Since(sent)
	t.Logf("%d MiB over the overlay intact in %v (%.0f KiB/s)", size>>20, el.Round(time.Millisecond), float64(size)/1024/el.Seconds())
}

var pingSummary = regexp.MustCompile(`(?s)(\d+(?:\.\d+)?)% packet loss.*rtt min/avg/max/mdev = ([0-9.]+)/`)
