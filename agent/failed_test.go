package agent

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
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
		got := failedWinners(m.Name, view, leases)
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
	if got := failedWinners("old00", small, leases); len(got) != 1 {
		t.Errorf("the only witness does not tell: %+v", got)
	}
	// A member that joined after the failure (its claim is younger) is
	// not picked while senderPool older members are there, even if this
	// node noticed the failure only after the member joined.
	late := leaseMember("late", "100.64.50.0/24", leaseT0.Add(-3*time.Minute).UnixMilli())
	late.Since = leaseT0.Add(-3 * time.Minute)
	view = append(failedView(senderPool), late)
	leases = ResolveLeases(hostLeasePool(), view, leaseT0)
	if got := failedWinners("late", view, leases); len(got) != 0 {
		t.Errorf("late joiner tells: %+v", got)
	}
	// Every member computes the same sender, whatever order it lists the
	// members in.
	picked := map[string]bool{}
	for _, perm := range [][]Member{view, append([]Member{view[len(view)-1]}, view[:len(view)-1]...)} {
		for _, m := range perm {
			if len(failedWinners(m.Name, perm, leases)) == 1 {
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
	if got := failedWinners("c", view, leases); len(got) != 0 {
		t.Errorf("notice for a conflict between alive members: %+v", got)
	}
}

func TestParseFailedNotice(t *testing.T) {
	good := []heldLease{{Name: "gone", Block: "100.64.1.0/24", Lt: claimEarly, FailedFor: 1000}, {Name: "gone2", Block: "100.64.2.0/24", Lt: claimLate}}
	enc := func(h ...heldLease) []byte { b, _ := json.Marshal(h); return b }
	got, err := parseFailedNotice(enc(good...), time.Minute)
	if err != nil || len(got) != 2 || got[1].Name != "gone2" {
		t.Fatalf("good notice: %+v %v", got, err)
	}
	// An entry past the hold time is dropped, not the list (the sender's
	// TTL may be longer).
	stale := heldLease{Name: "long-gone", Block: "100.64.3.0/24", FailedFor: (2 * time.Minute).Milliseconds()}
	got, err = parseHeld(enc(good[0], stale), time.Minute)
	if err != nil || len(got) != 1 || got[0].Name != "gone" {
		t.Errorf("notice with a stale entry: %+v %v", got, err)
	}
	bad := map[string][]byte{
		"not json":     []byte("{"),
		"empty":        []byte("[]"),
		"no name":      enc(heldLease{Block: "100.64.1.0/24", FailedFor: 1}),
		"long name":    enc(heldLease{Name: strings.Repeat("n", 200), Block: "100.64.1.0/24"}),
		"negative age": enc(heldLease{Name: "gone", Block: "100.64.1.0/24", FailedFor: -1}),
		"only too old": enc(stale),
		"bad block":    enc(heldLease{Name: "gone", Block: "100.64.1.7/24"}),
		"no block":     enc(heldLease{Name: "gone"}),
		"one bad":      enc(good[0], heldLease{Name: "x", Block: "nope"}),
	}
	for name, b := range bad {
		if _, err := parseFailedNotice(b, time.Minute); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A notice for many held blocks is cut into queries that each fit one
// gossip packet.
func TestHeldLeasesFitBudget(t *testing.T) {
	var held []Member
	for i := 0; i < 40; i++ {
		held = append(held, asFailed(leaseMember(fmt.Sprintf("member-with-a-long-name-%03d", i), fmt.Sprintf("100.64.%d.0/24", i), claimEarly), time.Minute))
	}
	var sizes []int
	send := func(payload []byte) error {
		sizes = append(sizes, len(payload))
		if _, err := parseFailedNotice(payload, time.Hour); err != nil {
			t.Errorf("batch does not parse: %v", err)
		}
		return nil
	}
	if err := batchHeld(held, leaseT0, send); err != nil {
		t.Fatal(err)
	}
	for _, n := range sizes {
		if n > noticeBudget {
			t.Errorf("batch of %d bytes, budget %d", n, noticeBudget)
		}
	}
	if len(sizes) < 2 {
		t.Errorf("40 members in %d batch(es)", len(sizes))
	}
	// A probe ack carries what fits of the list.
	ack, rest, err := packHeld(heldEntries(held, leaseT0), ackBudget)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseHeld(ack, time.Hour)
	if err != nil || len(ack) > ackBudget || len(got) == 0 || len(got)+len(rest) != 40 {
		t.Errorf("ack of %d bytes (budget %d): %d members, %d left over, err %v", len(ack), ackBudget, len(got), len(rest), err)
	}
}

func FuzzParseFailedNotice(f *testing.F) {
	b, _ := json.Marshal([]heldLease{{Name: "gone", Block: "100.64.1.0/24", Lt: 5, FailedFor: 5}})
	f.Add(b)
	f.Add([]byte(`[{"n":"x","b":"::/0","l":1,"f":1}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		held, err := parseFailedNotice(b, time.Hour)
		if err != nil {
			return
		}
		for _, h := range held {
			p, perr := netip.ParsePrefix(h.Block)
			if h.Name == "" || h.FailedFor < 0 || h.FailedFor > time.Hour.Milliseconds() || h.Lt < 0 || perr != nil || p != p.Masked() {
				t.Fatalf("accepted %q as %+v", b, h)
			}
		}
	})
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
