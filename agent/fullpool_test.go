package agent

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/plan"
)

// A newcomer that takes the block of a member that failed before it
// joined (it missed the probe acks that list it), in a full pool, learns
// of the failure, stops offering the block
// to pods (Lease not ready, conflict reported) and gets it only after the
// TTL. An agent that starts while every block is held waits instead of
// exiting, and leases the first block that frees up.
func TestFullPoolHeldBlockAndWaitingAgent(t *testing.T) {
	pool := plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/22"), BlockBits: 24, TTL: 10 * time.Minute}
	s := newSim(t, pool)
	s.profile = "local"
	clock := &fakeClock{}
	s.now = clock.Now
	first := []string{"a", "b", "c", "d"}
	for _, n := range first {
		s.start(n, 0, false)
	}
	waitUntil(t, 30*time.Second, "four agents fill the pool", func() error { return s.settled(first) })
	held := s.leases([]string{"d"})["d"]
	s.stop("d") // a crash: no leave
	waitUntil(t, 30*time.Second, "d seen failed", func() error {
		for _, m := range s.all["a"].mem.Members() {
			if m.Name == "d" && m.Status != plan.StatusFailed {
				return fmt.Errorf("a sees d %s", m.Status)
			}
		}
		return nil
	})

	s.seed = s.all["a"].addr
	// e learns nothing from probe acks, as a newcomer whose claim raced
	// its first ack: it claims d's block and a notice tells it.
	s.noHeldAcks = true
	nc := s.start("e", 0, false)
	s.noHeldAcks = false
	waitUntil(t, 30*time.Second, "the newcomer knows its block is held", func() error {
		l := nc.Lease()
		if l.Ready || !strings.Contains(l.Reason, "conflict") {
			return fmt.Errorf("lease %+v", l)
		}
		return nil
	})
	if st := nc.Report(); len(st.Conflicts) != 1 || st.Conflicts[0].Winner != "d" || st.Conflicts[0].Block != held.String() {
		t.Errorf("conflicts in the newcomer's report: %+v", st.Conflicts)
	}
	time.Sleep(3 * time.Second) // a few failed re-lease passes
	if v := nc.metrics.conflicts.Value(); v != 1 {
		t.Errorf("weft_ipam_conflicts_total = %v after retries, want 1", v)
	}

	// A sixth agent finds every block held (by a, b, c, and d's TTL, which
	// its first probe ack tells it): it must wait, not exit.
	late := s.start("f", 0, false)
	time.Sleep(3 * time.Second)
	select {
	case err := <-late.done:
		t.Fatalf("an agent facing a full pool exited: %v", err)
	default:
	}
	if l := late.Lease(); l.Ready || l.Block != "" {
		t.Errorf("the waiting agent offers a lease: %+v", l)
	}

	clock.advance(pool.TTL + time.Minute)
	waitUntil(t, 30*time.Second, "the newcomer owns the block after the TTL", func() error {
		if l := nc.Lease(); !l.Ready || l.Block != held.String() {
			return fmt.Errorf("lease %+v", l)
		}
		return nil
	})
	s.all["c"].cfg.LeaveOnExit = true
	s.stop("c")
	waitUntil(t, 30*time.Second, "the waiting agent takes the left block", func() error {
		return s.settled([]string{"a", "b", "e", "f"})
	})
}
