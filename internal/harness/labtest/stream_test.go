package labtest

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/api"
)

// Issue 6, test 3: kill -9 an agent while a TCP stream crosses its node.
// The stream keeps flowing after the restart with no reset, and `weft
// status --json`, run in the node as an operator would, shows the same
// identity before and after: block, public key, fingerprint, interface and
// tunnel mode.
func TestKillNineDuringStreamStatusIdentical(t *testing.T) {
	lab := newLab(t, 2)
	key := writeGossipKey(t)
	n1 := startAgent(t, lab, lab.Nodes[0], key, nil)
	n1.ready(30 * time.Second)
	n2 := startAgent(t, lab, lab.Nodes[1], key, lab.Nodes[0])
	n2.ready(30 * time.Second)
	eventually(t, 60*time.Second, "meshed", func() error { return meshed(n1, n2) })
	before := statusCLI(t, n2)

	s := startStream(t, n1, n2)
	s.flows(t, 1<<20, 30*time.Second, "stream flows before the kill")
	n2.Stop(syscall.SIGKILL)
	killed := time.Now()
	if err := n2.Start(); err != nil {
		t.Fatal(err)
	}
	n2.ready(30 * time.Second)
	s.flows(t, 4<<20, 60*time.Second, "stream flows after the restart")
	t.Logf("restarted agent ready and 4 MiB more across %v after the kill", time.Since(killed).Round(time.Millisecond))
	if err := s.stop(); err != nil {
		t.Fatalf("stream broke across kill -9: %v", err)
	}
	after := statusCLI(t, n2)
	type identity struct{ Block, Address, PublicKey, Fingerprint, Interface, Mode string }
	id := func(s api.SelfReport) identity {
		return identity{s.Block, s.Address, s.PublicKey, s.Fingerprint, s.Interface, s.Mode}
	}
	if id(before.Self) != id(after.Self) {
		t.Errorf("identity changed across kill -9:\nbefore %+v\nafter  %+v", id(before.Self), id(after.Self))
	}
	if before.Self.Block == "" || before.Self.PublicKey == "" || before.Self.Interface == "" || before.Self.Mode == "" {
		t.Errorf("status before the kill is missing fields: %+v", before.Self)
	}
}

// statusCLI runs `weft status --json` inside p's node.
func statusCLI(t *testing.T, p *proc) api.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := p.node.Command(ctx, weftBin, "status", "--json", "--socket", p.Socket()).Output()
	if err != nil {
		t.Fatalf("weft status in %s: %v", p.node.Name, err)
	}
	var st api.Report
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("weft status --json in %s: %v\n%s", p.node.Name, err, out)
	}
	return st
}

// Issue 6, test 4: WireGuard key rotation on both ends of a TCP stream, a
// few seconds apart, does not break it; the rotations are counted.
func TestKeyRotationDuringStream(t *testing.T) {
	lab := newLab(t, 2)
	key := writeGossipKey(t)
	n1 := startAgent(t, lab, lab.Nodes[0], key, nil, "--key-rotation", "4s")
	n1.ready(30 * time.Second)
	n2 := startAgent(t, lab, lab.Nodes[1], key, lab.Nodes[0], "--key-rotation", "3s")
	n2.ready(30 * time.Second)
	eventually(t, 60*time.Second, "meshed", func() error { return meshed(n1, n2) })
	keys := map[*proc]string{}
	counts := map[*proc]float64{}
	for _, p := range []*proc{n1, n2} {
		st, err := p.Status()
		if err != nil {
			t.Fatal(err)
		}
		keys[p] = st.Self.PublicKey
		counts[p], _ = p.metric("weft_key_rotations_total")
	}

	s := startStream(t, n1, n2)
	// About 13 s of stream, in which n2 rotates four times and n1 three.
	deadline := time.Now().Add(13 * time.Second)
	for time.Now().Before(deadline) {
		s.flows(t, 256<<10, 30*time.Second, "stream flows while the keys rotate")
	}
	s.flows(t, 1<<20, 30*time.Second, "stream still flowing after the rotations")
	if err := s.stop(); err != nil {
		t.Fatalf("stream broke during key rotation: %v", err)
	}
	for _, p := range []*proc{n1, n2} {
		st, err := p.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Self.PublicKey == keys[p] {
			t.Errorf("%s: key never rotated", p.name)
		}
		v, err := p.metric("weft_key_rotations_total")
		if err != nil {
			t.Fatal(err)
		}
		if v < counts[p]+2 {
			t.Errorf("%s: weft_key_rotations_total %v -> %v, want at least 2 more", p.name, counts[p], v)
		}
		t.Logf("%s: weft_key_rotations_total %v -> %v during the stream", p.name, counts[p], v)
	}
	// Each side ends up peering with the other's current key.
	eventually(t, 20*time.Second, "peers carry the current keys", func() error { return meshedWithKeys(n1, n2) })
}

// meshedWithKeys is nil when each of a pair peers with the other's current
// key.
func meshedWithKeys(a, b *proc) error {
	for _, pair := range [][2]*proc{{a, b}, {b, a}} {
		sa, err := pair[0].Status()
		if err != nil {
			return err
		}
		sb, err := pair[1].Status()
		if err != nil {
			return err
		}
		m, ok := member(sa, pair[1].name)
		if !ok || m.PublicKey != sb.Self.PublicKey || m.Peer == nil {
			return fmt.Errorf("%s does not peer with %s's current key", pair[0].name, pair[1].name)
		}
	}
	return nil
}
