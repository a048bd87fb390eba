package agent

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/weftnet/weft/agent/membership"
	"github.com/weftnet/weft/agent/plan"
	"github.com/weftnet/weft/tunnel"
)

// reconcile is one pass: lease, the view of the mesh, the gossip chores
// it calls for, then peers and routes, the snapshot and metrics.
func (a *Agent) reconcile() (err error) {
	start := time.Now()
	defer func() {
		a.metrics.reconcile.Observe(time.Since(start).Seconds())
		if err != nil {
			a.mu.Lock()
			a.last.err = err
			a.mu.Unlock()
		}
	}()
	// A failed claim (no free block after losing ours) does not end the
	// pass: the snapshot must show the conflict and Lease must stop
	// offering the lost block.
	members := a.mem.Members()
	changed, claimErr := a.claimLease(members, false)
	if changed {
		members = a.mem.Members() // with our new tags
	}
	now := a.cfg.Now()
	members = a.checkRanges(members)
	leases := a.resolve(members, now)
	a.gossipChores(members, leases, now)
	want := a.desired(members, leases, now)
	err = errors.Join(append(a.apply(want), claimErr)...)
	a.mu.Lock()
	a.last = snapshot{at: now, members: members, leases: leases, desired: want, err: err,
		expiry: plan.FirstExpiry(members, a.cfg.Pool.TTL, now)}
	snap, block := a.last, a.tags.Block
	a.mu.Unlock()
	if a.hooks.passed != nil {
		a.hooks.passed(snap, block)
	}
	a.metrics.observe(members, leases, want)
	return err
}

// gossipChores are what a pass's view calls for besides peers and routes:
// notices to newcomers that claim a failed member's block, a resync when
// this node's view looks stale, and the rejoin list kept for the next
// start.
func (a *Agent) gossipChores(members []plan.Member, leases plan.Leases, now time.Time) {
	a.tellNewcomers(members, leases, now)
	a.doubtFailedWinners(members, leases, now)
	a.keepRejoin(members, now)
}

// desired is plan.Desired with the configured keepalive, and with the
// keepalive off for the peers this node must not initiate to yet.
func (a *Agent) desired(members []plan.Member, leases plan.Leases, now time.Time) plan.DesiredState {
	want := plan.Desired(a.cfg.NodeName, members, leases, now)
	for i := range want.Peers {
		want.Peers[i].PersistentKeepalive = a.cfg.Keepalive
	}
	if a.dev != nil {
		leaseTimes := make(map[tunnel.Key]int64, len(members))
		for _, m := range members {
			if m.TagsErr == nil {
				leaseTimes[m.Tags.PublicKey] = m.Tags.LeaseTime
			}
		}
		self := plan.Claim{LeaseTime: a.tags.LeaseTime, Key: a.tags.PublicKey}
		a.hold.at = plan.HoldInitiations(self, want.Peers, leaseTimes, a.handshaken(), a.hold.since, now)
	}
	for _, s := range want.Skipped {
		a.log.Debug("member skipped", "member", s.Name, "reason", s.Reason)
	}
	return want
}

// apply sets the device's peers and the host routes to want.
func (a *Agent) apply(want plan.DesiredState) []error {
	var errs []error
	if a.dev != nil {
		if err := a.dev.SetPeers(want.Peers); err != nil {
			errs = append(errs, err)
		}
	}
	if a.routes != nil {
		if err := a.routes.setRoutes(want.Routes, plan.NodeAddress(a.state.Block)); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// tellNewcomers tells alive members that claim the block of a member that
// failed before they joined (they lose to it, but cannot know: membership.TellFailed)
// about every failed member still holding a block. Each newcomer is told at
// most every membership.NoticeEvery while its conflict lasts.
func (a *Agent) tellNewcomers(members []plan.Member, leases plan.Leases, now time.Time) {
	for key, at := range a.repair.told {
		if now.Sub(at) > 2*membership.NoticeEvery {
			delete(a.repair.told, key)
		}
	}
	var held []plan.Member
	for _, c := range plan.FailedWinners(a.cfg.NodeName, members, leases) {
		if at, ok := a.repair.told[c.Loser]; ok && now.Sub(at) < membership.NoticeEvery {
			continue
		}
		if held == nil {
			for _, m := range members {
				if m.Status == plan.StatusFailed && now.Sub(m.Since) < a.cfg.Pool.TTL {
					held = append(held, m)
				}
			}
		}
		a.repair.told[c.Loser] = now
		// The member the newcomer lost to goes first: the notices are
		// several queries, and the first to arrive settles this conflict.
		first := slices.IndexFunc(held, func(m plan.Member) bool { return m.Name == c.Winner })
		order := held
		if first > 0 {
			order = append([]plan.Member{held[first]}, slices.Delete(slices.Clone(held), first, first+1)...)
		}
		if err := a.mem.TellFailed(c.Loser, order, now); err != nil {
			a.log.Warn("telling a newcomer about failed members", "err", err)
			continue
		}
		a.log.Info("told a newcomer its block is held for a failed member", "newcomer", c.Loser, "failed", c.Winner, "block", c.Block, "held_blocks", len(held))
	}
}

// doubtAfter is how long a failed member may keep beating a live claimant
// in this node's view before the node doubts its view and resyncs.
const doubtAfter = 30 * time.Second

// doubtFailedWinners resyncs this node's view with a random member while a
// member it sees failed keeps beating a live member's claim for longer than
// doubtAfter. Either the live member is a newcomer that will be told and
// re-lease (membership.TellFailed), or this node missed the failed member's leave: a
// lost leave intent is otherwise repaired only by Serf's periodic push-pull
// (minutes apart in a big mesh), and until then this node routes the live
// member's block to nobody. At most one resync per doubtAfter.
func (a *Agent) doubtFailedWinners(members []plan.Member, leases plan.Leases, now time.Time) {
	status := make(map[string]plan.Status, len(members))
	for _, m := range members {
		status[m.Name] = m.Status
	}
	live := map[string]bool{}
	for _, c := range leases.Conflicts {
		if status[c.Winner] != plan.StatusFailed || status[c.Loser] != plan.StatusAlive || c.Loser == a.cfg.NodeName {
			continue
		}
		key := c.Winner + "/" + c.Loser
		live[key] = true
		if _, ok := a.repair.doubts[key]; !ok {
			a.repair.doubts[key] = now
		}
	}
	due := false
	for key, since := range a.repair.doubts {
		if !live[key] {
			delete(a.repair.doubts, key)
		} else if now.Sub(since) >= doubtAfter {
			due = true
		}
	}
	if due && now.Sub(a.repair.lastDoubt) >= doubtAfter {
		a.repair.lastDoubt = now
		a.mem.Resync("")
	}
}

// nextExpiry is when the earliest lease TTL of a failed member in the last
// pass's view runs out (zero if none): its block frees then, and the next
// pass should see it without waiting for the resync.
func (a *Agent) nextExpiry() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last.expiry
}

// resolve decides the owners of host blocks and of sidecar addresses, two
// pools with the same rules, into one Leases.
func (a *Agent) resolve(members []plan.Member, now time.Time) plan.Leases {
	return plan.MergeLeases(plan.ResolveLeases(a.cfg.Pool, members, now), plan.ResolveLeases(a.cfg.sidecarPool(), members, now))
}

// checkRanges marks members whose block is not one of their pool (a block
// of the cluster range for a host, an address of the sidecar range for a
// sidecar) as invalid: their claim is void anyway, and this way they are
// counted and shown with the reason instead of silently skipped.
func (a *Agent) checkRanges(ms []plan.Member) []plan.Member {
	for i, m := range ms {
		pool, what := a.cfg.Pool, "a /%d of the cluster range %s"
		if m.Tags.Mode == plan.ModeSidecar {
			pool, what = a.cfg.sidecarPool(), "a /%d of the sidecar range %s"
		}
		if m.TagsErr == nil && m.Tags.Block.IsValid() && !pool.InPool(m.Tags.Block) {
			ms[i].TagsErr = fmt.Errorf("block %s is not "+what, m.Tags.Block, pool.BlockBits, pool.Range)
		}
		if err := ms[i].TagsErr; err != nil && m.Status == plan.StatusAlive && a.repair.warned[m.Name] != err.Error() {
			a.log.Warn("ignoring a member with invalid tags", "member", m.Name, "err", err)
			a.repair.warned[m.Name] = err.Error()
		}
	}
	return ms
}

// handshaken lists the peers of the device that have completed a
// handshake.
func (a *Agent) handshaken() map[tunnel.Key]bool {
	out := map[tunnel.Key]bool{}
	if a.dev == nil {
		return out
	}
	st, err := a.dev.Stats()
	if err != nil {
		return out
	}
	for _, p := range st.Peers {
		if !p.LastHandshake.IsZero() {
			out[p.PublicKey] = true
		}
	}
	return out
}
