package agent

import (
	"context"
	"errors"
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
