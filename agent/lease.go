package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/weftnet/weft/agent/plan"
)

// The node's own lease: claiming, and the memory of conflicts lost.

// claimLease decides this node's block and, if it changed, persists it
// before announcing it; it reports whether it did. At start, a persisted
// block another live member now holds is given up rather than fought for.
func (a *Agent) claimLease(members []plan.Member, starting bool) (bool, error) {
	now := a.cfg.Now()
	self := plan.Member{Name: a.cfg.NodeName, Status: plan.StatusAlive, Since: now, Tags: a.tags}
	if starting && a.tags.Block.IsValid() {
		for _, m := range members {
			if m.Name != a.cfg.NodeName && m.Status == plan.StatusAlive && m.TagsErr == nil && m.Tags.Block == a.tags.Block {
				a.log.Warn("persisted block is held by another member now; leasing another", "block", a.tags.Block, "holder", m.Name)
				self.Tags.Block, self.Tags.LeaseTime = netip.Prefix{}, 0
			}
		}
	}
	block, lt, changed, err := plan.NextLease(a.cfg.ownPool(), self, a.withAvoided(members, now), now)
	if err != nil {
		if a.tags.Block.IsValid() {
			a.noteLostLease(members, now) // lost ours and no other to take
		}
		return false, fmt.Errorf("agent: lease: %w", err)
	}
	if !changed && block == a.tags.Block {
		return false, nil
	}
	if a.tags.Block.IsValid() && block != a.tags.Block {
		a.noteLostLease(members, now)
	}
	st := a.state
	old := st.Block
	st.Block, st.Range, st.LeaseTime = block, a.cfg.ownPool().Range, lt
	if err := a.saveState(st); err != nil {
		return false, err
	}
	a.mu.Lock()
	a.state = st
	a.tags.Block, a.tags.LeaseTime = block, lt
	tags := a.tags
	a.mu.Unlock()
	a.log.Info("lease claimed", "block", block)
	if err := a.mem.SetTags(tags); err != nil {
		return true, err
	}
	if a.dev != nil {
		return true, a.applyAddress(old)
	}
	return true, nil
}

// noteLostLease records a conflict this node lost.
func (a *Agent) noteLostLease(members []plan.Member, now time.Time) {
	leases := plan.ResolveLeases(a.cfg.ownPool(), append(others(members, a.cfg.NodeName), plan.Member{Name: a.cfg.NodeName, Status: plan.StatusAlive, Since: now, Tags: a.tags}), now)
	for _, c := range leases.Conflicts {
		if c.Loser == a.cfg.NodeName {
			a.mu.Lock()
			seen := len(a.conflicts) > 0 && a.conflicts[len(a.conflicts)-1] == c
			a.mu.Unlock()
			if seen {
				continue // still the same conflict, retried
			}
			a.repair.avoid[c.Block] = now
			a.log.Warn("lease conflict lost; re-leasing", "block", c.Block, "winner", c.Winner)
			a.metrics.conflicts.Inc()
			a.mu.Lock()
			a.conflicts = append(a.conflicts, c)
			if len(a.conflicts) > 16 {
				a.conflicts = a.conflicts[1:]
			}
			a.mu.Unlock()
		}
	}
}

// withAvoided adds to members, for the lease decision only, a stand-in
// claim for each block this node lost a conflict for within the TTL. A
// newcomer that lost a failed member's block learned of that member from a
// notice, and the notice's memory fades (learnedFor) well before the
// member's TTL ends; without this, the claim's search, which starts at the
// same block for the same name every time, walked straight back into it.
func (a *Agent) withAvoided(members []plan.Member, now time.Time) []plan.Member {
	var extra []plan.Member
	for b, at := range a.repair.avoid {
		if now.Sub(at) >= a.cfg.Pool.TTL {
			delete(a.repair.avoid, b)
			continue
		}
		extra = append(extra, plan.Member{Name: "\x00lost " + b.String(), Status: plan.StatusFailed, Since: at,
			Tags: plan.Tags{Version: plan.TagVersion, Block: b}})
	}
	if len(extra) == 0 {
		return members
	}
	return append(slices.Clip(members), extra...)
}

func others(ms []plan.Member, self string) []plan.Member {
	out := make([]plan.Member, 0, len(ms))
	for _, m := range ms {
		if m.Name != self {
			out = append(out, m)
		}
	}
	return out
}
