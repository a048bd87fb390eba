package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/hashicorp/go-sockaddr"

	"github.com/weftnet/weft/agent/membership"
	"github.com/weftnet/weft/agent/plan"
	"github.com/weftnet/weft/tunnel"
)

// Run starts the agent and keeps the node's WireGuard peers, routes and
// lease in line with the mesh until ctx is cancelled: start (identity and
// gossip), join the mesh, serve the API, acquire a lease, open the device,
// then loop.
func (a *Agent) Run(ctx context.Context) error {
	mode, err := a.start()
	if err != nil {
		return err
	}
	defer a.shutdown()
	joined, ok := a.joinMesh(ctx)
	if !ok {
		return nil
	}
	srv, err := a.serveAPI(ctx)
	if err != nil {
		return err
	}
	defer srv.close()
	if ok, err := a.acquireLease(ctx); !ok || err != nil {
		return err
	}
	if err := a.becomeReady(ctx, mode); err != nil {
		return err
	}
	return a.loop(ctx, joined)
}

// start loads the node's identity and rejoin list, picks the tunnel
// backend and starts gossip with the node's tags.
func (a *Agent) start() (tunnel.Mode, error) {
	if err := a.loadIdentity(); err != nil {
		return "", err
	}
	a.loadRejoin()
	mode, err := a.resolveMode()
	if err != nil {
		return "", err
	}
	announced := string(mode)
	if a.cfg.Sidecar {
		announced = plan.ModeSidecar
	}
	a.mu.Lock()
	a.tags = plan.Tags{
		Version:   plan.TagVersion,
		PublicKey: a.state.Key.Public(),
		Mode:      announced,
		MTU:       a.cfg.MTU,
		Block:     a.state.Block,
		LeaseTime: a.state.LeaseTime,
	}
	a.mu.Unlock()
	return mode, a.startMembership()
}

// startMembership starts Serf and announces the node's tags, with the
// endpoint taken from the advertised gossip address unless configured.
func (a *Agent) startMembership() error {
	mem, err := membership.Start(membership.Config{
		NodeName:   a.cfg.NodeName,
		Bind:       a.cfg.Bind,
		Advertise:  a.cfg.Advertise,
		Keys:       a.cfg.GossipKeys,
		Insecure:   a.cfg.InsecureGossip,
		Profile:    a.cfg.GossipProfile,
		Timings:    a.cfg.GossipTimings,
		Tags:       a.withEndpoint(a.tags, netip.Addr{}),
		Logger:     a.log,
		Now:        a.cfg.Now,
		Transport:  a.hooks.transport,
		HoldFor:    a.cfg.Pool.TTL,
		OnProbe:    a.cfg.OnProbe,
		IgnoreAcks: a.hooks.noHeldAcks,
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.mem = mem
	a.mu.Unlock()
	if !mem.Encrypted() {
		a.log.Warn("gossip is NOT encrypted (--insecure-gossip)")
	}
	a.mu.Lock()
	a.tags = a.withEndpoint(a.tags, mem.LocalAddr().Addr())
	tags := a.tags
	a.mu.Unlock()
	if err := mem.SetTags(tags); err != nil {
		mem.Close()
		return err
	}
	return nil
}

// joinMesh contacts the members to join and, with join addresses, leases
// nothing before the mesh is reached: a block claimed alone would be
// checked against nobody, and kept. It reports whether a member answered
// (joined), and ok false if ctx ended first.
func (a *Agent) joinMesh(ctx context.Context) (joined, ok bool) {
	joined = a.join(ctx)
	for wait := 250 * time.Millisecond; !joined && a.alone(); wait = min(2*wait, 10*time.Second) {
		select {
		case <-ctx.Done():
			return false, false
		case <-time.After(wait):
		}
		joined = a.join(ctx)
	}
	// A persisted block is ours again only if no live member took it while
	// we were away (after our lease TTL ran out).
	if a.state.Block.IsValid() && len(a.cfg.Join) > 0 {
		a.waitSettled(ctx, 2*time.Second)
	}
	return joined, true
}

// acquireLease claims the node's first block. It reports false (with a nil
// error) if ctx ended first.
func (a *Agent) acquireLease(ctx context.Context) (bool, error) {
	// A newcomer learns the blocks held for failed members before it
	// claims one: memberlist does not tell it of them, its first probe's
	// ack does (package membership).
	if !a.state.Block.IsValid() && !a.hooks.noHeldAcks && a.othersHoldBlocks() {
		if !a.waitHeld(ctx) {
			return false, nil
		}
	}
	return a.claimFirstLease(ctx)
}

// waitHeld waits for the first probe ack that lists the held blocks, at
// most HeldWait; false if ctx ended first.
func (a *Agent) waitHeld(ctx context.Context) bool {
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return false
	case <-a.mem.HeardHeld():
		a.log.Info("heard which blocks are held for failed members", "after", time.Since(t0).Round(time.Millisecond))
	case <-time.After(a.mem.HeldWait()):
		a.log.Warn("no probe ack told which blocks are held; claiming anyway", "waited", a.mem.HeldWait())
	}
	return true
}

// claimFirstLease claims a block, waiting while the pool is full. A full
// pool is not fatal: blocks free up as members leave or their TTL runs
// out. It waits (not ready) and tries again: when a failed member's TTL
// ends, when members change (at most every fullPoolRecheck), and at least
// after a backoff. It reports false (with a nil error) if ctx ended first.
func (a *Agent) claimFirstLease(ctx context.Context) (bool, error) {
	for wait := time.Second; ; {
		members := a.mem.Members()
		_, err := a.claimLease(members, true)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, plan.ErrNoFreeBlock) {
			return false, err
		}
		a.mu.Lock()
		a.last.err = err
		a.mu.Unlock()
		retry, now := wait, a.cfg.Now()
		if end := plan.FirstExpiry(members, a.cfg.Pool.TTL, now); !end.IsZero() {
			retry = min(retry, end.Sub(now)+10*time.Millisecond)
		}
		a.log.Warn("no free block yet; waiting", "err", err, "retry_in", retry.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return false, nil
		case <-time.After(retry):
			wait = min(2*wait, 30*time.Second)
		case <-a.mem.Changed():
			// A member left (its block is free at once) or a claim moved.
			select {
			case <-ctx.Done():
				return false, nil
			case <-time.After(fullPoolRecheck):
			}
		}
	}
}

// becomeReady opens the device (unless the agent runs without one) and
// marks the agent ready, removing the handover note of the agent before.
func (a *Agent) becomeReady(ctx context.Context, mode tunnel.Mode) error {
	if !a.hooks.noDevice {
		if err := a.openDevice(ctx, mode); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.ready = true
	a.mu.Unlock()
	close(a.readyCh)
	a.dropHandover()
	return nil
}

// loop reconciles on each membership change (paced), failed member's TTL
// end, held-back handshake, resync tick and retry, and reloads the gossip
// keys and rotates the WireGuard key when due, until ctx ends.
func (a *Agent) loop(ctx context.Context, joined bool) error {
	resync, keys, rotate, stop := a.tickers()
	defer stop()
	var (
		backoff       time.Duration
		retry, settle <-chan time.Time // a failed pass's retry; a paced change
		pace          = pacer{perMembers: a.cfg.PaceMembers}
	)
	for pass := true; ; {
		if pass {
			settle = nil
			retry, backoff = a.pass(&pace, backoff)
		}
		pass = true
		expiry, initiate := a.wakeups()
		select {
		case <-ctx.Done():
			return nil
		case <-a.mem.Changed():
			// Paced: while members come and go without a pause (a
			// rollout, a big mesh forming), one pass covers all changes
			// of its gap.
			if wait := pace.wait(time.Now()); wait > 0 {
				if settle == nil {
					settle = time.After(wait)
				}
				pass = false
			}
		case <-settle:
		case <-expiry:
		case <-initiate:
		case <-resync:
			// Alone with join addresses to try (they were all down when we
			// started, or we lost everyone): keep trying them.
			if !joined || a.alone() {
				joined = a.join(ctx)
			}
		case <-retry:
		case <-keys:
			// A keyring change shows in gossip, not in what to reconcile.
			a.reloadGossipKeys()
			pass = false
		case <-rotate:
			if err := a.rotateKey(); err != nil {
				a.log.Error("key rotation failed", "err", err)
			}
		}
	}
}

// pass runs one reconcile pass and returns when to retry it (nil after a
// pass that succeeded) with the backoff to double next time.
func (a *Agent) pass(pace *pacer, backoff time.Duration) (<-chan time.Time, time.Duration) {
	start := time.Now()
	err := a.reconcile()
	pace.passed(start, time.Now(), len(a.last.members))
	if err == nil {
		return nil, 0
	}
	backoff = min(max(2*backoff, 250*time.Millisecond), 30*time.Second)
	a.log.Warn("reconcile failed; retrying", "err", err, "in", backoff)
	return time.After(backoff), backoff
}

// tickers starts the resync ticker and, where configured, the gossip key
// source's and the key rotation's (nil channels otherwise); stop stops
// them.
func (a *Agent) tickers() (resync, keys, rotate <-chan time.Time, stop func()) {
	var ts []*time.Ticker
	start := func(d time.Duration) <-chan time.Time {
		t := time.NewTicker(d)
		ts = append(ts, t)
		return t.C
	}
	if a.cfg.KeyRotation > 0 {
		rotate = start(a.cfg.KeyRotation)
	}
	resync = start(a.cfg.Resync)
	if a.cfg.GossipKeySource != nil {
		keys = start(a.cfg.GossipKeyReload)
	}
	return resync, keys, rotate, func() {
		for _, t := range ts {
			t.Stop()
		}
	}
}

// wakeups are the timers of the next failed member's TTL end and of the
// next held-back handshake (nil channels for none).
func (a *Agent) wakeups() (expiry, initiate <-chan time.Time) {
	if next := a.nextExpiry(); !next.IsZero() {
		expiry = time.After(next.Sub(a.cfg.Now()) + 10*time.Millisecond)
	}
	if !a.hold.at.IsZero() {
		initiate = time.After(a.hold.at.Sub(a.cfg.Now()))
	}
	return expiry, initiate
}

// pacer spaces the reconcile passes that membership changes trigger: after
// a pass that took d, the next waits until pacingFactor×d (at most maxGap)
// after its end. A pass is O(members), and while a large mesh forms or
// rolls, changes arrive faster than passes end: without a gap an agent of
// a 1000-member mesh spent all its time reconciling, one pass per change.
// With it, reconciling takes at most a tenth of the agent's time and one
// pass covers all changes of its gap; in a small mesh a pass takes well
// under a millisecond and the gap is nothing. Timers, retries and expiries
// are not paced.
//
// With perMembers set (Config.PaceMembers), from 2×perMembers members on,
// the gap is one maxGap per perMembers members, however fast the last pass
// was: for simulations of hundreds of agents on a few cores, where every
// pass of every agent shares the same cores and a pass's own time says
// nothing of the others'.
type pacer struct {
	lastEnd    time.Time
	lastTook   time.Duration
	perMembers int
	members    int // in the last pass
}

const (
	pacingFactor = 10
	maxGap       = 2 * time.Second
)

// passed records a pass from start to end over members members.
func (p *pacer) passed(start, end time.Time, members int) {
	p.lastEnd, p.lastTook, p.members = end, end.Sub(start), members
}

// wait is how long a membership change seen at now waits for its pass.
func (p *pacer) wait(now time.Time) time.Duration {
	gap := min(pacingFactor*p.lastTook, maxGap)
	if p.perMembers > 0 && p.members/p.perMembers > 1 {
		gap = time.Duration(p.members/p.perMembers) * maxGap
	}
	return max(0, gap-now.Sub(p.lastEnd))
}

// join contacts the configured members; true if one answered (or there is
// nobody to join).
func (a *Agent) join(ctx context.Context) bool {
	if len(a.cfg.Join) > 0 {
		n, err := a.mem.Join(a.cfg.Join)
		if err == nil {
			a.log.Info("joined the mesh", "contacted", n)
			return true
		}
		a.log.Warn("join failed; will retry", "err", err)
	}
	// The members kept from the last run (rejoin.go), in the background:
	// with join addresses, their answer also ends the wait below (the
	// agent is no longer alone).
	a.rejoinKept(ctx)
	return len(a.cfg.Join) == 0
}

// fullPoolRecheck is the least time between two claims of an agent that
// waits for a free block while members change: a forming or rolling mesh
// changes many times a second.
const fullPoolRecheck = 250 * time.Millisecond

// othersHoldBlocks reports whether another alive member claims a block:
// one whose ack can list held blocks (a mesh that starts all at once has
// none).
func (a *Agent) othersHoldBlocks() bool {
	return slices.ContainsFunc(a.mem.Members(), func(m plan.Member) bool {
		return m.Name != a.cfg.NodeName && m.Status == plan.StatusAlive && m.TagsErr == nil && m.Tags.Block.IsValid()
	})
}

// alone reports whether no other member is alive.
func (a *Agent) alone() bool {
	return !a.mem.OthersAlive()
}

// withEndpoint sets the WireGuard endpoint tag: the configured endpoint,
// else the advertised or bound gossip address, else the address memberlist
// itself would advertise for an unspecified bind (the first private IP).
func (a *Agent) withEndpoint(t plan.Tags, gossip netip.Addr) plan.Tags {
	for _, ip := range []netip.Addr{a.cfg.Endpoint, gossip, a.cfg.Advertise.Addr(), a.cfg.Bind.Addr(), privateIP()} {
		if ip.IsValid() && !ip.IsUnspecified() {
			t.Endpoint = netip.AddrPortFrom(ip.Unmap(), uint16(a.cfg.ListenPort))
			break
		}
	}
	return t
}

func privateIP() netip.Addr {
	s, err := sockaddr.GetPrivateIP()
	if err != nil || s == "" {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(s)
	return a
}

// resolveMode runs tunnel detection once so the mode can be announced.
func (a *Agent) resolveMode() (tunnel.Mode, error) {
	if a.cfg.Mode != tunnel.ModeAuto {
		return a.cfg.Mode, nil
	}
	mode, tried := tunnel.Detect(tunnel.Probes{})
	for _, t := range tried {
		if t.Err != nil {
			a.log.Info("tunnel backend unavailable", "mode", t.Mode, "reason", t.Err)
		}
	}
	a.log.Info("tunnel backend chosen", "mode", mode)
	return mode, nil
}

// waitSettled gives gossip a moment to deliver the full member list after
// a join (push-pull sync normally lands within a round trip).
func (a *Agent) waitSettled(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

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

func (a *Agent) openDevice(ctx context.Context, mode tunnel.Mode) error {
	cfg := tunnel.Config{
		Name:       a.cfg.Interface,
		Mode:       mode,
		PrivateKey: a.state.Key,
		ListenPort: a.cfg.ListenPort,
		MTU:        a.cfg.MTU,
		Logger:     a.log,
		// A killed agent leaves the interface and its routes in place and
		// the restarted one adopts them: streams across the node survive.
		Persist: true,
		// A netstack node is one with no TUN and no NET_ADMIN, most likely
		// not root either (a sidecar): /var/run/wireguard may be out of
		// reach, which must not keep the mesh down.
		UAPIOptional: mode == tunnel.ModeNetstack,
	}
	if mode == tunnel.ModeNetstack {
		cfg.Address = netip.PrefixFrom(plan.NodeAddress(a.state.Block), a.state.Block.Addr().BitLen())
	}
	dev, err := tunnel.Open(ctx, cfg)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.dev = dev
	a.mu.Unlock()
	if mode != tunnel.ModeNetstack {
		a.routes = &hostRoutes{link: a.cfg.Interface}
	}
	return a.applyAddress(netip.Prefix{})
}

// applyAddress puts the node address of the current block on the device:
// on the kernel link in host mode, in the userspace stack in netstack mode
// (replacing the address of a block given up).
func (a *Agent) applyAddress(old netip.Prefix) error {
	if nd, ok := a.dev.(*tunnel.NetstackDevice); ok && old.IsValid() {
		return nd.Stack().ReplaceAddress(plan.NodeAddress(old), plan.NodeAddress(a.state.Block))
	}
	if a.routes == nil {
		return nil
	}
	return a.routes.setAddress(plan.NodeAddress(a.state.Block))
}

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

// rotateKey replaces the WireGuard key: persist, switch the device, then
// announce, so peers learn the new key from gossip within a round.
func (a *Agent) rotateKey() error {
	k, err := tunnel.GeneratePrivateKey()
	if err != nil {
		return err
	}
	st := a.state
	st.Key = k
	if err := a.saveState(st); err != nil {
		return err
	}
	if a.dev != nil {
		if err := a.dev.SetPrivateKey(k); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.state = st
	a.tags.PublicKey = k.Public()
	tags := a.tags
	a.mu.Unlock()
	a.metrics.rotations.Inc()
	a.log.Info("WireGuard key rotated", "key", k)
	return a.mem.SetTags(tags)
}

// shutdown leaves the mesh and removes the device, or, with LeaveOnExit
// off (a restart, a rolling update), keeps both: the interface persists for
// the next agent to adopt, and the others see a failure that holds the block.
func (a *Agent) shutdown() {
	if a.cfg.LeaveOnExit {
		a.dropHandover()
	} else {
		a.leaveHandover()
	}
	if a.cfg.LeaveOnExit {
		if err := a.mem.Leave(); err != nil {
			a.log.Warn("leave failed", "err", err)
		} else {
			a.log.Info("left the mesh")
			// The block is free for others now; a later start of this node
			// must not announce it again (the key stays).
			st := a.state
			st.Block, st.Range, st.LeaseTime = netip.Prefix{}, netip.Prefix{}, 0
			if err := a.saveState(st); err != nil {
				a.log.Warn("could not clear the lease in the state file", "err", err)
			}
		}
	}
	a.mem.Close()
	a.bg.Wait()
	if a.dev != nil && a.cfg.LeaveOnExit {
		a.dev.Close()
	}
}
