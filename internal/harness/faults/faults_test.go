package faults_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/harness/faults"
	"github.com/weftnet/weft/internal/netlab"
)

// faultLab builds a lab of n nodes for the fault tests, removed at cleanup.
func faultLab(t *testing.T, n int) *netlab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and firewall rules inside them")
	}
	if testing.Short() {
		t.Skip("lab test timing pings across faults; runs without -short")
	}
	lab, err := netlab.New(context.Background(), netlab.Config{Nodes: n})
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

// pingStats is what one ping run measured.
type pingStats struct {
	sent, received int
	minRTT         time.Duration // 0 when nothing came back
}

func (s pingStats) loss() float64 { return 100 * float64(s.sent-s.received) / float64(s.sent) }

var (
	pingCounts = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	pingRTT    = regexp.MustCompile(`rtt min/avg/max/mdev = ([0-9.]+)/`)
)

// ping sends count pings from one node to another, interval apart, each
// waited for at most a second. A ping that gets no answer is not an error
// here: the counts say what happened.
func ping(t *testing.T, from, to *netlab.Node, count int, interval time.Duration) pingStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(count)*interval+30*time.Second)
	defer cancel()
	out, _ := from.Command(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count),
		"-i", fmt.Sprintf("%.3f", interval.Seconds()), "-W", "1", to.Addr().String()).CombinedOutput()
	m := pingCounts.FindSubmatch(out)
	if m == nil {
		t.Fatalf("ping %s -> %s: no summary: %s", from.Name, to.Name, out)
	}
	var s pingStats
	s.sent, _ = strconv.Atoi(string(m[1]))
	s.received, _ = strconv.Atoi(string(m[2]))
	if r := pingRTT.FindSubmatch(out); r != nil {
		ms, _ := strconv.ParseFloat(string(r[1]), 64)
		s.minRTT = time.Duration(ms * float64(time.Millisecond))
	}
	return s
}

// reaches checks that from gets answers from to (all of three, retried a
// few times: ARP may have to resolve after a heal); cut checks it gets none.
func reaches(t *testing.T, from, to *netlab.Node) {
	t.Helper()
	var s pingStats
	for try := 0; try < 5; try++ {
		if s = ping(t, from, to, 3, 200*time.Millisecond); s.received == 3 {
			return
		}
	}
	t.Errorf("%s -> %s: %d of %d pings answered, want all", from.Name, to.Name, s.received, s.sent)
}

func cut(t *testing.T, from, to *netlab.Node) {
	t.Helper()
	if s := ping(t, from, to, 3, 200*time.Millisecond); s.received != 0 {
		t.Errorf("%s -> %s: %d of %d pings answered across a cut, want none", from.Name, to.Name, s.received, s.sent)
	}
}

// TestNetem: SetNetem's delay shows in every round trip through the node
// in both directions of a ping, its loss rate in the share of lost pings,
// and ClearNetem puts the link back as it was.
func TestNetem(t *testing.T) {
	lab := faultLab(t, 2)
	ctx := context.Background()
	n1, n2 := lab.Nodes[0], lab.Nodes[1]
	base := ping(t, n1, n2, 5, 50*time.Millisecond)
	if base.received != 5 {
		t.Fatalf("no clean link to start with: %+v", base)
	}
	const delay = 30 * time.Millisecond
	if err := faults.SetNetem(ctx, lab, n1, delay, 0); err != nil {
		t.Fatal(err)
	}
	// Nothing leaves n1 earlier than the delay, so even the fastest round
	// trip, from either end, takes that long.
	for _, dir := range [][2]*netlab.Node{{n1, n2}, {n2, n1}} {
		s := ping(t, dir[0], dir[1], 10, 50*time.Millisecond)
		t.Logf("%s -> %s with %v on n1: %+v (clean: %v)", dir[0].Name, dir[1].Name, delay, s, base.minRTT)
		if s.received < 8 {
			t.Errorf("%s -> %s: %d of 10 answered with delay only", dir[0].Name, dir[1].Name, s.received)
		}
		if s.minRTT < delay {
			t.Errorf("%s -> %s: fastest round trip %v, want at least the %v delay", dir[0].Name, dir[1].Name, s.minRTT, delay)
		}
	}

	// 30 % loss on n1's egress: every echo request from n1 has that chance
	// of loss. 400 pings put the measured rate within 15-45 % far beyond
	// chance (over 6 standard deviations).
	if err := faults.SetNetem(ctx, lab, n1, 0, 30); err != nil {
		t.Fatal(err)
	}
	s := ping(t, n1, n2, 400, 5*time.Millisecond)
	t.Logf("n1 -> n2 with 30%% loss on n1: %.1f%% lost (%+v)", s.loss(), s)
	if l := s.loss(); l < 15 || l > 45 {
		t.Errorf("loss %.1f%%, want about 30%%", l)
	}

	if err := faults.ClearNetem(ctx, lab, n1); err != nil {
		t.Fatal(err)
	}
	s = ping(t, n1, n2, 50, 10*time.Millisecond)
	if s.received != s.sent || s.minRTT >= delay/2 {
		t.Errorf("after ClearNetem: %+v, want every ping back fast", s)
	}
	out, err := exec.Command("ip", "netns", "exec", lab.Switch, "iptables", "-w", "10", "-t", "mangle", "-S", "FORWARD").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.Contains(string(out), "NFQUEUE") {
		t.Errorf("ClearNetem left a rule:\n%s", out)
	}
	if err := faults.ClearNetem(ctx, lab, n1); err != nil {
		t.Errorf("clearing twice: %v", err)
	}
	if err := faults.SetNetem(ctx, lab, n1, -time.Second, 0); err == nil {
		t.Errorf("negative delay accepted")
	}
	if err := faults.SetNetem(ctx, lab, n1, 0, 101); err == nil {
		t.Errorf("loss of 101%% accepted")
	}
}

// TestNetemLeftForClose: a lab closed with a node still shaped closes the
// delay line and leaves no namespace behind.
func TestNetemLeftForClose(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and firewall rules inside them")
	}
	if testing.Short() {
		t.Skip("lab test; runs without -short")
	}
	lab, err := netlab.New(context.Background(), netlab.Config{Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := faults.SetNetem(context.Background(), lab, lab.Nodes[0], 5*time.Millisecond, 1); err != nil {
		lab.Close()
		t.Fatal(err)
	}
	if s := ping(t, lab.Nodes[0], lab.Nodes[1], 5, 20*time.Millisecond); s.received == 0 {
		t.Errorf("shaped link passes nothing: %+v", s)
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(netlab.NetnsDir)
	for _, e := range ents {
		if strings.Contains(e.Name(), lab.ID) {
			t.Errorf("namespace %s left after Close", e.Name())
		}
	}
}

// TestPartitionHeal: nodes of one group reach each other and nobody else;
// nodes in no group stay together; Heal makes the lab whole again.
func TestPartitionHeal(t *testing.T) {
	lab := faultLab(t, 4)
	ctx := context.Background()
	n := lab.Nodes
	if err := faults.Partition(ctx, lab, n[:2], n[2:]); err != nil {
		t.Fatal(err)
	}
	reaches(t, n[0], n[1])
	reaches(t, n[3], n[2])
	cut(t, n[0], n[2])
	cut(t, n[1], n[3])
	cut(t, n[3], n[0])

	// A new partition replaces the old one: n1 alone, the rest together.
	if err := faults.Partition(ctx, lab, n[:1]); err != nil {
		t.Fatal(err)
	}
	reaches(t, n[1], n[2])
	reaches(t, n[3], n[1])
	cut(t, n[0], n[1])
	cut(t, n[2], n[0])

	if err := faults.Heal(ctx, lab); err != nil {
		t.Fatal(err)
	}
	for _, a := range n {
		for _, b := range n {
			if a != b {
				reaches(t, a, b)
			}
		}
	}
	if err := faults.Partition(ctx, lab, n[:2], n[1:3]); err == nil {
		t.Errorf("a node in two groups was accepted")
	}
	other := faultLab(t, 1)
	if err := faults.Partition(ctx, lab, []*netlab.Node{other.Nodes[0]}); err == nil {
		t.Errorf("a node of another lab was accepted")
	}
}

// TestCutUncut: a cut node reaches nobody and nobody reaches it; the rest
// of the lab is untouched; Uncut restores it.
func TestCutUncut(t *testing.T) {
	lab := faultLab(t, 3)
	ctx := context.Background()
	n := lab.Nodes
	reaches(t, n[0], n[1])
	if err := faults.Cut(ctx, lab, n[1]); err != nil {
		t.Fatal(err)
	}
	cut(t, n[0], n[1])
	cut(t, n[1], n[2])
	reaches(t, n[0], n[2])
	if err := faults.Uncut(ctx, lab, n[1]); err != nil {
		t.Fatal(err)
	}
	reaches(t, n[0], n[1])
	reaches(t, n[1], n[2])
}
