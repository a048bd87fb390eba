package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/plan"
)

// heldSetup starts four agents, crashes o1 (its block is held for the
// TTL) and returns the survivors, o1's block and the name of a newcomer
// whose first claim, in a view without o1, lands on that block.
func heldSetup(t *testing.T, s *sim) (rest []string, held netip.Prefix, newcomer string) {
	t.Helper()
	s.profile = "local"
	old := []string{"o1", "o2", "o3", "o4"}
	for _, n := range old {
		s.start(n, 0, false)
	}
	waitUntil(t, time.Minute, "mesh", func() error { return s.settled(old) })
	before := s.leases(old)
	s.stop("o1") // a crash: its block is held for the TTL
	s.seed = s.all["o2"].addr
	rest = old[1:]
	waitUntil(t, time.Minute, "o1 seen failed", func() error {
		for _, n := range rest {
			for _, m := range s.all[n].mem.Members() {
				if m.Name == "o1" && m.Status != plan.StatusFailed {
					return fmt.Errorf("%s sees o1 %s", n, m.Status)
				}
			}
		}
		return nil
	})
	var view []plan.Member
	for _, m := range s.all["o2"].mem.Members() {
		if m.Name != "o1" {
			view = append(view, m)
		}
	}
	for i := 0; i < 10000; i++ {
		name := fmt.Sprintf("n%d", i)
		if b, err := plan.ClaimBlock(s.pool, name, view, time.Now()); err == nil && b == before["o1"] {
			return rest, before["o1"], name
		}
	}
	t.Fatalf("no name of 10000 claims o1's block %s", before["o1"])
	return nil, netip.Prefix{}, ""
}

// A newcomer that claims the block of a member that failed before it
// joined is told (package membership), loses to the failed member and re-leases;
// every view then agrees. The newcomer learns nothing from probe acks, as
// one whose claim raced its first ack.
func TestNewcomerToldAboutFailedMember(t *testing.T) {
	s := newSim(t, plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/21"), BlockBits: 24, TTL: 10 * time.Minute})
	rest, held, newcomer := heldSetup(t, s)
	s.noHeldAcks = true
	s.start(newcomer, 0, false)
	all := append(append([]string{}, rest...), newcomer)
	took := waitUntil(t, 2*time.Minute, "newcomer told and re-leased", func() error {
		if b := s.leases([]string{newcomer})[newcomer]; b == held {
			return fmt.Errorf("%s still holds o1's block %s", newcomer, b)
		}
		return s.settled(all)
	})
	a := s.all[newcomer]
	a.mu.Lock()
	lost := len(a.conflicts)
	a.mu.Unlock()
	if lost == 0 {
		t.Errorf("%s never claimed o1's block: the test did not exercise the notice", newcomer)
	}
	t.Logf("newcomer off the held block and views agree after %v", took.Round(time.Millisecond))
}

// A newcomer learns the held blocks from its first probe's ack before its
// first claim (package membership), and never claims o1's: no conflict at all, no
// notice needed.
func TestNewcomerLearnsHeldBlocksFromAcks(t *testing.T) {
	s := newSim(t, plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/21"), BlockBits: 24, TTL: 10 * time.Minute})
	rest, held, newcomer := heldSetup(t, s)
	a := s.start(newcomer, 0, false)
	all := append(append([]string{}, rest...), newcomer)
	took := waitUntil(t, time.Minute, "newcomer leased", func() error { return s.settled(all) })
	a.mu.Lock()
	conflicts := slices.Clone(a.conflicts)
	a.mu.Unlock()
	if len(conflicts) > 0 || s.leases([]string{newcomer})[newcomer] == held {
		t.Errorf("%s claimed o1's held block %s although acks list it: conflicts %v", newcomer, held, conflicts)
	}
	if _, _, learned := a.mem.Learned("o1"); !learned {
		t.Errorf("%s did not learn o1 from probe acks", newcomer)
	}
	// Acks pass on first-hand failures only.
	for who, want := range map[string]bool{rest[0]: true, newcomer: false} {
		held, err := s.all[who].mem.HeldInAcks()
		if err != nil {
			t.Fatalf("%s's ack payload: %v", who, err)
		}
		if got := slices.Contains(held, "o1"); got != want {
			t.Errorf("%s's ack lists o1: %v, want %v (%+v)", who, got, want, held)
		}
	}
	t.Logf("newcomer leased a free block, views agree after %v", took.Round(time.Millisecond))
}
