package plan

import (
	"fmt"
	"testing"
	"time"
)

// failedView is a mesh where old members saw "gone" fail 2 minutes ago and
// "fresh" joined after that and claimed gone's block.
func failedView(old int) []Member {
	var ms []Member
	for i := 0; i < old; i++ {
		ms = append(ms, leaseMember(fmt.Sprintf("old%02d", i), fmt.Sprintf("100.64.%d.0/24", 10+i), claimEarly))
	}
	ms = append(ms, asFailed(leaseMember("gone", "100.64.1.0/24", claimEarly), 2*time.Minute))
	fresh := leaseMember("fresh", "100.64.1.0/24", leaseT0.Add(-time.Minute).UnixMilli())
	fresh.Since = leaseT0.Add(-time.Minute) // seen alive after gone failed
	return append(ms, fresh)
}

func TestFailedWinnersPicksFewSenders(t *testing.T) {
	view := failedView(20)
	leases := ResolveLeases(hostLeasePool(), view, leaseT0)
	if c, ok := leases.LostConflict("fresh"); !ok || c.Winner != "gone" {
		t.Fatalf("fresh should lose to gone: %+v %v", c, ok)
	}
	senders := 0
	for _, m := range view {
		got := FailedWinners(m.Name, view, leases)
		switch {
		case m.Name == "fresh" || m.Name == "gone":
			if len(got) != 0 {
				t.Errorf("%s would tell: %+v", m.Name, got)
			}
		case len(got) == 1:
			if got[0].Loser != "fresh" || got[0].Winner != "gone" {
				t.Errorf("%s tells %+v", m.Name, got[0])
			}
			senders++
		case len(got) > 1:
			t.Errorf("%s tells %d notices", m.Name, len(got))
		}
	}
	if senders != noticeSenders {
		t.Errorf("%d members tell the newcomer, want %d", senders, noticeSenders)
	}

	// With only one member that saw the failure, that one tells.
	small := failedView(1)
	leases = ResolveLeases(hostLeasePool(), small, leaseT0)
	if got := FailedWinners("old00", small, leases); len(got) != 1 {
		t.Errorf("the only witness does not tell: %+v", got)
	}
	// A member that joined after the failure (its claim is younger) is
	// not picked while senderPool older members are there, even if this
	// node noticed the failure only after the member joined.
	late := leaseMember("late", "100.64.50.0/24", leaseT0.Add(-3*time.Minute).UnixMilli())
	late.Since = leaseT0.Add(-3 * time.Minute)
	view = append(failedView(senderPool), late)
	leases = ResolveLeases(hostLeasePool(), view, leaseT0)
	if got := FailedWinners("late", view, leases); len(got) != 0 {
		t.Errorf("late joiner tells: %+v", got)
	}
	// Every member computes the same sender, whatever order it lists the
	// members in.
	picked := map[string]bool{}
	for _, perm := range [][]Member{view, append([]Member{view[len(view)-1]}, view[:len(view)-1]...)} {
		for _, m := range perm {
			if len(FailedWinners(m.Name, perm, leases)) == 1 {
				picked[m.Name] = true
			}
		}
	}
	if len(picked) != noticeSenders {
		t.Errorf("senders %v, want %d whatever the order", picked, noticeSenders)
	}
}

func TestFailedWinnersIgnoresOtherConflicts(t *testing.T) {
	// Two alive members in conflict (a partition heal): no notice, the
	// loser sees the winner itself.
	view := []Member{
		leaseMember("a", "100.64.1.0/24", claimEarly),
		leaseMember("b", "100.64.1.0/24", claimLate),
		leaseMember("c", "100.64.2.0/24", claimEarly),
	}
	leases := ResolveLeases(hostLeasePool(), view, leaseT0)
	if len(leases.Conflicts) != 1 {
		t.Fatalf("conflicts: %+v", leases.Conflicts)
	}
	if got := FailedWinners("c", view, leases); len(got) != 0 {
		t.Errorf("notice for a conflict between alive members: %+v", got)
	}
}

// The senders of notices spread over the members: for 74 newcomers and
// 160 candidates, many different members rank first (raw FNV-1a picked
// one member for all 74).
func TestRankSpreadsSenders(t *testing.T) {
	first := map[string]int{}
	for l := range 74 {
		loser := fmt.Sprintf("new%03d", l)
		best, who := ^uint64(0), ""
		for c := 40; c < 200; c++ {
			name := fmt.Sprintf("node%03d", c)
			if r := rank(name, loser); r < best {
				best, who = r, name
			}
		}
		first[who]++
	}
	if len(first) < 30 {
		t.Errorf("%d distinct first-ranked senders for 74 losers, want >= 30: %v", len(first), first)
	}
}
