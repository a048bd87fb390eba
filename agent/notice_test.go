package agent

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// A newcomer that claims the block of a member that failed before it
// joined is told (failed.go), loses to the failed member and re-leases;
// every view then agrees.
func TestNewcomerToldAboutFailedMember(t *testing.T) {
	pool := LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/21"), BlockBits: 24, TTL: 10 * time.Minute}
	s := newSim(t, pool)
	s.profile = "local"
	old := []string{"o1", "o2", "o3", "o4"}
	for _, n := range old {
		s.start(n, 0, false)
	}
	waitUntil(t, time.Minute, "mesh", func() error { return s.settled(old) })
	before := s.leases(old)
	s.stop("o1") // a crash: its block is held for the TTL
	s.seed = s.all["o2"].addr
	rest := old[1:]
	waitUntil(t, time.Minute, "o1 seen failed", func() error {
		for _, n := range rest {
			for _, m := range s.all[n].mem.Members() {
				if m.Name == "o1" && m.Status != StatusFailed {
					return fmt.Errorf("%s sees o1 %s", n, m.Status)
				}
			}
		}
		return nil
	})
	// A newcomer whose claim lands on o1's block in a view without o1.
	var view []Member
	for _, m := range s.all["o2"].mem.Members() {
		if m.Name != "o1" {
			view = append(view, m)
		}
	}
	var newcomer string
	for i := 0; i < 10000 && newcomer == ""; i++ {
		name := fmt.Sprintf("n%d", i)
		if b, err := ClaimBlock(pool, name, view, time.Now()); err == nil && b == before["o1"] {
			newcomer = name
		}
	}
	s.start(newcomer, 0, false)
	all := append(append([]string{}, rest...), newcomer)
	took := waitUntil(t, 2*time.Minute, "newcomer told and re-leased", func() error {
		if b := s.leases([]string{newcomer})[newcomer]; b == before["o1"] {
			return fmt.Errorf("%s still holds o1's block %s", newcomer, b)
		}
		return s.settled(all)
	})
	t.Logf("newcomer off the held block and views agree after %v", took.Round(time.Millisecond))
}
