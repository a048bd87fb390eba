package labtest

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/plan"
	"github.com/weftnet/weft/internal/harness/faults"
)

// Issue 6, test 1: a split brain that heals to zero duplicates.
//
// Four agents, partitioned 2|2 (A = n1 n2, B = n3 n4) with a short lease
// TTL. Once B sees A failed for longer than the TTL, A's blocks are free on
// B's side, and a newcomer joining B takes one of them: its name is picked
// (with the agent's own ClaimBlock over B's view) so that its hash lands on
// an A block, which makes the collision certain, not likely. After the
// heal the earlier claim (A's) wins, the newcomer re-leases, reports the
// conflict in its status and metrics, and every agent agrees on one owner
// per block.
func TestPartitionHealNoDuplicates(t *testing.T) {
	const ttl = 5 * time.Second
	lab := newLab(t, 5)
	ctx := context.Background()
	key := writeGossipKey(t)
	pool := plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/20"), BlockBits: 24, TTL: ttl}
	flags := []string{"--cluster-cidr", pool.Range.String(), "--lease-ttl", ttl.String(), "--gossip-profile", "local"}
	n := lab.Nodes
	var ps []*proc
	for i := range 4 {
		var join = n[0]
		if i == 0 {
			join = nil
		}
		p := startAgent(t, lab, n[i], key, join, flags...)
		p.ready(30 * time.Second) // one at a time: no conflicts before the test makes one
		ps = append(ps, p)
	}
	eventually(t, 60*time.Second, "4 agents meshed", func() error { return meshed(ps...) })
	before := blocksSeenBy(t, ps[0])

	start := time.Now()
	// n5, the newcomer's node, is on side B.
	if err := faults.Partition(ctx, lab, n[:2], n[2:]); err != nil {
		t.Fatal(err)
	}
	// B must see both A members failed, for longer than the TTL.
	for _, b := range ps[2:] {
		eventually(t, 60*time.Second, b.name+" sees side A failed past the TTL", func() error {
			st, err := b.Status()
			if err != nil {
				return err
			}
			for _, a := range ps[:2] {
				m, ok := member(st, a.name)
				if ok && m.State == "failed" && time.Since(m.Since) > ttl+time.Second {
					continue
				}
				return fmt.Errorf("%s sees %s %s since %v", b.name, a.name, m.State, m.Since)
			}
			return nil
		})
	}
	t.Logf("side B sees side A failed past the TTL %v after the partition", time.Since(start).Round(time.Millisecond))

	// B's view, as a newcomer joining B gets it: only B's members, alive.
	var view []plan.Member
	for _, b := range ps[2:] {
		view = append(view, plan.Member{Name: b.name, Status: plan.StatusAlive, Since: time.Now(),
			Tags: plan.Tags{Block: netip.MustParsePrefix(before[b.name])}})
	}
	aBlocks := map[string]string{before[ps[0].name]: ps[0].name, before[ps[1].name]: ps[1].name}
	var name, taken string
	for i := 0; i < 100000 && name == ""; i++ {
		cand := fmt.Sprintf("nb%d", i)
		b, err := plan.ClaimBlock(pool, cand, view, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := aBlocks[b.String()]; ok {
			name, taken = cand, b.String()
		}
	}
	if name == "" {
		t.Fatal("no newcomer name claims a block of side A")
	}
	winner := aBlocks[taken]
	newcomer := startAgent(t, lab, n[4], key, n[2], append(flags, "--node-name", name)...)
	st := newcomer.ready(30 * time.Second)
	if st.Self.Block != taken {
		t.Fatalf("newcomer %s leased %s on side B, want %s (%s's block): no collision to heal", name, st.Self.Block, taken, winner)
	}
	t.Logf("newcomer %s holds %s on side B, %s holds it on side A", name, taken, winner)

	healed := time.Now()
	if err := faults.Heal(ctx, lab); err != nil {
		t.Fatal(err)
	}
	all := append(ps[:4:4], newcomer)
	eventually(t, 90*time.Second, "every agent agrees on one owner per block", func() error {
		return agreeOnLeases(all)
	})
	t.Logf("healed to one owner per block in %v", time.Since(healed).Round(time.Millisecond))

	after := blocksSeenBy(t, ps[0])
	if after[winner] != taken {
		t.Errorf("%s lost %s to the later claim: has %s", winner, taken, after[winner])
	}
	if after[name] == taken {
		t.Errorf("newcomer %s still has %s", name, taken)
	}
	st, err := newcomer.Status()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range st.Conflicts {
		if c.Block == taken && c.Winner == winner && c.Loser == name {
			found = true
		}
	}
	if !found {
		t.Errorf("newcomer's status shows conflicts %+v, want %s won by %s from %s", st.Conflicts, taken, winner, name)
	}
	if v, err := newcomer.metric("weft_ipam_conflicts_total"); err != nil || v < 1 {
		t.Errorf("newcomer's weft_ipam_conflicts_total = %v (%v), want >= 1", v, err)
	}
	for _, p := range ps[:2] {
		if st, err := p.Status(); err == nil && p.name == winner && len(st.Conflicts) != 0 {
			t.Errorf("the winner %s reports lost conflicts %+v", winner, st.Conflicts)
		}
	}
	// The data path agrees: side A reaches the newcomer at its new address.
	addr, err := newcomer.address()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, ps[0].name+" pings the newcomer's new address", func() error {
		return pingOverlay(n[0], addr)
	})
}

var blockRE = regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+/\d+$`)

// blocksSeenBy returns member name -> block as p sees it.
func blocksSeenBy(t *testing.T, p *proc) map[string]string {
	t.Helper()
	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range st.Members {
		if m.Block != "" {
			out[m.Name] = m.Block
		}
	}
	return out
}

// agreeOnLeases is nil when every agent is ready and sees every other one
// alive, each owning a block of its own, no block announced twice, and
// every agent sees the same name -> block map.
func agreeOnLeases(ps []*proc) error {
	var first map[string]string
	for _, p := range ps {
		st, err := p.Status()
		if err != nil {
			return err
		}
		if !st.Ready {
			return fmt.Errorf("%s not ready", p.name)
		}
		seen := map[string]string{}
		owner := map[string]string{}
		for _, q := range ps {
			m, ok := member(st, q.name)
			switch {
			case !ok:
				return fmt.Errorf("%s does not see %s", p.name, q.name)
			case m.State != "alive":
				return fmt.Errorf("%s sees %s %s", p.name, q.name, m.State)
			case !blockRE.MatchString(m.Block) || !m.OwnsBlock:
				return fmt.Errorf("%s: %s does not own its block %q", p.name, q.name, m.Block)
			}
			if o, dup := owner[m.Block]; dup {
				return fmt.Errorf("%s sees %s announced by %s and %s", p.name, m.Block, o, q.name)
			}
			owner[m.Block] = q.name
			seen[q.name] = m.Block
		}
		if first == nil {
			first = seen
		} else if !maps.Equal(first, seen) {
			return fmt.Errorf("%s sees %v, %s sees %v", ps[0].name, first, p.name, seen)
		}
	}
	return nil
}
