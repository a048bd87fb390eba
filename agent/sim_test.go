package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	rtmetrics "runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/weftnet/weft/agent/membership"
	"github.com/weftnet/weft/agent/plan"
	prom "github.com/weftnet/weft/internal/metrics"
)

// switchboard decides which lab members can reach which: members in
// different groups cannot (a partition). Group 0 reaches everyone.
type switchboard struct {
	mu    sync.RWMutex
	group map[string]int // "127.0.0.1:port" -> group
	split bool           // groups are cut off from each other
}

func (s *switchboard) partition(on bool) {
	s.mu.Lock()
	s.split = on
	s.mu.Unlock()
}

func (s *switchboard) set(addr string, g int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.group == nil {
		s.group = map[string]int{}
	}
	s.group[addr] = g
}

func (s *switchboard) cut(from, to string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, b := s.group[from], s.group[to]
	return s.split && a != 0 && b != 0 && a != b
}

// cutTransport is memberlist's real UDP/TCP transport on loopback that
// silently drops what the switchboard says cannot pass. Filtering on the
// sending side is enough because every member of a simulation uses one.
type cutTransport struct {
	*membership.Transport
	self string
	sb   *switchboard
}

var errCut = errors.New("partitioned")

func newCutTransport(sb *switchboard) (*cutTransport, error) {
	gt, err := membership.NewTransport(netip.MustParseAddrPort("127.0.0.1:0"), log.New(io.Discard, "", 0))
	if err != nil {
		return nil, err
	}
	return &cutTransport{Transport: gt, self: fmt.Sprintf("127.0.0.1:%d", gt.Port()), sb: sb}, nil
}

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.sb.cut(t.self, addr) {
		return time.Now(), nil
	}
	return t.Transport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *cutTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	if t.sb.cut(t.self, addr) {
		return nil, errCut
	}
	return t.Transport.DialTimeout(addr, d)
}

func (t *cutTransport) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, d)
}

// simAgent is a full Agent (membership, leases, reconcile loop, state file,
// local API) without a WireGuard device, on loopback.
type simAgent struct {
	*Agent
	addr   string
	cancel context.CancelFunc
	done   chan error
	// pass is the agent's last reconcile pass (Agent.passed), read without
	// its lock.
	pass atomic.Pointer[simPass]
}

type simPass struct {
	snap  snapshot
	block netip.Prefix
}

type sim struct {
	t    testing.TB
	sb   *switchboard
	key  []byte
	pool plan.LeaseConfig
	dir  string
	all  map[string]*simAgent
	seed string
	// seedFor overrides the join address per group (inside a partition).
	seedFor map[int]string
	now     func() time.Time
	// mem, when set, carries gossip in memory instead of over loopback
	// UDP/TCP (large benchmarks).
	mem *memNetwork
	// keySource is every agent's gossip key source (keyring_test.go).
	keySource func() ([][]byte, error)
	// profile is the gossip timing. "lan" (memberlist's LAN timings) keeps
	// hundreds of agents in one process on two cores free of false failure
	// verdicts; "local" detects failures in about a second, for small sims.
	profile string
	// crowded starts agents with crowdedTimings and pacing, stretched by
	// stretch (0 or 1: as they are).
	crowded bool
	// sidecar names the agents that start as sidecars.
	sidecar map[string]bool
	// resync is each agent's Config.Resync: 2 s in tests that wait for
	// TTLs; the production default in benchmarks of many agents, where
	// a pass every 2 s per agent would be the load being measured.
	resync time.Duration
	// noHeldAcks starts agents that learn nothing from probe acks
	// (Agent.noHeldAcks).
	noHeldAcks bool
	// stretch slows crowded agents' gossip (crowdedTimings).
	stretch int
	// apiIdle is the local API's idle timeout of agents started next
	// (Agent.apiIdle; 0: apiIdleTimeout).
	apiIdle time.Duration
}

// crowdedTimings are the gossip timings of hundreds of agents in one
// process on a few cores (TestSimulationChurn, BenchmarkConvergence): LAN
// gossip, but a probe may wait seconds for the scheduler, so failure
// detection is slowed to match instead of flapping. Gossip rounds are 100
// ms apart to 4 members: in a 200-member churn, memberlist's own messages
// (tag updates) filled every packet at LAN's 200 ms to 3 members, and
// Serf's queries (the failed-member notices), which get what room is left,
// starved for minutes. A stretch above 1 multiplies the gossip and probe
// intervals and the probe timeout: 1000 agents on two cores run in slow
// motion, since at LAN rates their gossip alone wants more CPU than the
// cores have.
func crowdedTimings(stretch int) membership.Timings {
	k := time.Duration(max(stretch, 1))
	return membership.Timings{
		GossipInterval: k * 100 * time.Millisecond,
		GossipNodes:    4,
		ProbeInterval:  k * 3 * time.Second,
		ProbeTimeout:   k * 3 * time.Second,
		SuspicionMult:  6,
	}
}

// crowdedMembers paces crowded agents (Config.PaceMembers): from 400
// members on, a membership change waits 2 s per 200 members. 1000 agents
// paced by their own pass times reconciled in 36 % of two cores, with the
// collector as much again, and starved their own gossip into false
// failures.
const crowdedMembers = 200

func newSim(t testing.TB, pool plan.LeaseConfig) *sim {
	k, _ := membership.GenerateGossipKey()
	s := &sim{t: t, sb: &switchboard{}, key: k, pool: pool, dir: t.TempDir(), all: map[string]*simAgent{}, seedFor: map[int]string{}, profile: "lan", sidecar: map[string]bool{}, resync: 2 * time.Second}
	t.Cleanup(func() {
		for _, a := range s.all {
			a.cancel()
		}
		for _, a := range s.all {
			<-a.done
		}
	})
	return s
}

// start runs an agent named name in group g, joining the seed (or any
// running agent of its group).
func (s *sim) start(name string, g int, leave bool) *simAgent {
	s.t.Helper()
	tr, err := s.transport(name, g)
	if err != nil {
		s.t.Fatal(err)
	}
	var join []string
	if j := s.seedFor[g]; j != "" {
		join = []string{j}
	} else if s.seed != "" {
		join = []string{s.seed}
	}
	cfg := Config{
		NodeName:      name,
		Join:          join,
		Bind:          netip.MustParseAddrPort(tr.self),
		GossipKeys:    [][]byte{s.key},
		GossipProfile: s.profile,
		Pool:          s.pool,
		Sidecar:       s.sidecar[name],
		StateDir:      filepath.Join(s.dir, name),
		SocketPath:    filepath.Join(s.dir, name, "a.sock"),
		Endpoint:      netip.MustParseAddr("127.0.0.1"),
		LeaveOnExit:   leave,
		Resync:        s.resync,
		Logger:        simLogger(),
		Registry:      prom.NewRegistry(),
		Now:           s.now,

		GossipKeySource: s.keySource,
		GossipKeyReload: 200 * time.Millisecond, // with a keySource only
	}
	if s.crowded {
		cfg.GossipTimings, cfg.PaceMembers = crowdedTimings(s.stretch), crowdedMembers
	}
	a, err := New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	a.hooks.noDevice = true
	a.hooks.noHeldAcks = s.noHeldAcks
	a.hooks.apiIdle = s.apiIdle
	a.hooks.transport = tr.Transport
	ctx, cancel := context.WithCancel(context.Background())
	sa := &simAgent{Agent: a, addr: tr.self, cancel: cancel, done: make(chan error, 1)}
	a.hooks.passed = func(snap snapshot, block netip.Prefix) { sa.pass.Store(&simPass{snap, block}) }
	go func() { sa.done <- a.Run(ctx) }()
	if s.seed == "" {
		s.seed = tr.self
	}
	s.all[name] = sa
	return sa
}

// simTransport is a memberlist transport with the address it listens on.
type simTransport struct {
	memberlist.Transport
	self string
}

// transport returns a new member's transport: in memory, or loopback.
func (s *sim) transport(name string, g int) (simTransport, error) {
	if s.mem != nil {
		mt := s.mem.newTransport()
		return simTransport{mt, mt.addr.String()}, nil
	}
	ct, err := newCutTransport(s.sb)
	if err != nil {
		return simTransport{}, err
	}
	s.sb.set(ct.self, g)
	return simTransport{ct, ct.self}, nil
}

// stop ends an agent: with its configured leave, or as a crash.
func (s *sim) stop(name string) {
	a := s.all[name]
	a.cancel()
	if err := <-a.done; err != nil {
		s.t.Errorf("%s: %v", name, err)
	}
	a.done <- nil // for the cleanup
}

// stopAll stops the named agents concurrently.
func (s *sim) stopAll(names []string) {
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		a := s.all[name]
		a.cancel()
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = <-a.done
			a.done <- nil // for the cleanup
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			s.t.Errorf("%s: %v", names[i], err)
		}
	}
}

// leases returns every running agent's current block.
func (s *sim) leases(names []string) map[string]netip.Prefix {
	out := map[string]netip.Prefix{}
	for _, n := range names {
		a := s.all[n]
		a.mu.Lock()
		out[n] = a.tags.Block
		a.mu.Unlock()
	}
	return out
}

func (s *sim) lastErr(name string) error {
	a := s.all[name]
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last.err
}

// distinctBlocks returns the named agents' blocks, or an error unless each
// holds one and no two hold the same.
func (s *sim) distinctBlocks(names []string) (map[string]netip.Prefix, error) {
	blocks := s.leases(names)
	switch none, a, b := clash(names, blocks); {
	case none != "":
		return nil, fmt.Errorf("%s has no block", none)
	case a != "":
		return nil, fmt.Errorf("%s and %s both hold %s (%s: %v; %s: %v)", a, b, blocks[a], a, s.lastErr(a), b, s.lastErr(b))
	}
	return blocks, nil
}

// clash finds, in names' order, the first agent without a block in blocks
// (none), or else the first two holding the same block (a, b).
func clash(names []string, blocks map[string]netip.Prefix) (none, a, b string) {
	owner := make(map[netip.Prefix]string, len(names))
	for _, n := range names {
		blk := blocks[n]
		if !blk.IsValid() {
			return n, "", ""
		}
		if o, dup := owner[blk]; dup {
			return "", o, n
		}
		owner[blk] = n
	}
	return "", "", ""
}

// lastPasses loads the named agents' last passes (nil before the first)
// and the blocks they held after them.
func (s *sim) lastPasses(names []string) (map[string]*simPass, map[string]netip.Prefix) {
	passes := make(map[string]*simPass, len(names))
	blocks := make(map[string]netip.Prefix, len(names))
	for _, n := range names {
		p := s.all[n].pass.Load()
		passes[n] = p
		if p != nil {
			blocks[n] = p.block
		}
	}
	return passes, blocks
}

// settled reports nil once every named agent has a block, no two share one,
// and every agent sees all of them alive with those blocks and owning them
// (a block held for a failed member within its TTL is not owned by a
// newcomer that claims it, in the view of the members that saw the failure).
func (s *sim) settled(names []string) error {
	blocks, err := s.distinctBlocks(names)
	if err != nil {
		return err
	}
	for _, n := range names {
		seen := map[string]netip.Prefix{}
		view := s.all[n].mem.Members()
		for _, m := range view {
			if m.Status == plan.StatusAlive {
				seen[m.Name] = m.Tags.Block
			}
		}
		now := time.Now()
		if s.now != nil {
			now = s.now()
		}
		leases := plan.ResolveLeases(s.pool, view, now)
		for _, o := range names {
			if seen[o] != blocks[o] {
				return fmt.Errorf("%s sees %s with %v, it holds %v", n, o, seen[o], blocks[o])
			}
			if w, _ := leases.Owner(blocks[o]); w != o {
				return fmt.Errorf("%s sees %s's block %s owned by %q (%s); %s sees %s: %s", n, o, blocks[o], w, s.describe(n, w), o, w, s.describe(o, w))
			}
		}
	}
	return nil
}

// applied is settled for what the agents have applied: every agent holds a
// distinct block, and each agent's last reconcile pass (what it gave
// WireGuard and the routes) saw every agent alive with the block it holds
// and as its owner. It reads the agents' snapshots instead of recomputing
// 1000 views, which on two cores under 1000 agents took minutes a check.
func (s *sim) applied(names []string) error {
	passes, blocks := s.lastPasses(names)
	switch none, a, b := clash(names, blocks); {
	case none != "":
		return fmt.Errorf("%s has no block after a pass", none)
	case a != "":
		return fmt.Errorf("%s and %s both hold %s after their last passes", a, b, blocks[a])
	}
	sorted := slices.Sorted(slices.Values(names))
	for _, n := range names {
		if _, _, _, err := lastPassOff(passes[n].snap, sorted, blocks); err != nil {
			return fmt.Errorf("%s's last pass %w", n, err)
		}
	}
	return nil
}

// lastPassOff compares one agent's last pass with the blocks the agents
// hold: how many of them it lacks (not alive there), how many it shows with
// another block or owner, and the first of these. names must be sorted; a
// pass's members are (Members). A walk of both, no map: a map per agent,
// a thousand times a check, left the check parked in GC assists for
// minutes under 1000 agents.
func lastPassOff(snap snapshot, names []string, blocks map[string]netip.Prefix) (missing, down, wrong int, first error) {
	i := 0
	for _, o := range names {
		for i < len(snap.members) && snap.members[i].Name < o {
			i++
		}
		// Errors are made for the first difference only (no garbage).
		switch {
		case i == len(snap.members) || snap.members[i].Name != o || snap.members[i].Status != plan.StatusAlive:
			if i < len(snap.members) && snap.members[i].Name == o {
				down++
			}
			if missing++; first == nil {
				first = fmt.Errorf("lacks %s (alive, holding %s)", o, blocks[o])
			}
		case snap.members[i].Tags.Block != blocks[o]:
			if wrong++; first == nil {
				first = fmt.Errorf("saw %s with %s, it holds %s", o, snap.members[i].Tags.Block, blocks[o])
			}
		default:
			if w, _ := snap.leases.Owner(blocks[o]); w != o {
				if wrong++; first == nil {
					first = fmt.Errorf("saw %s's block %s owned by %q", o, blocks[o], w)
				}
			}
		}
	}
	return missing, down, wrong, first
}

// summary counts how far the named agents are from applied(names): the
// agents whose last pass is off, and its entries that lack a member (not
// alive there) or show another block (WEFT_SIM_TRACE progress). It takes
// no lock of an agent or of Serf: under 1000 agents on two cores, 1000
// contended locks held one check for minutes.
func (s *sim) summary(names []string) string {
	passes, blocks := s.lastPasses(names)
	sorted := slices.Sorted(slices.Values(names))
	var offAgents, missing, down, wrong int
	for _, n := range names {
		var snap snapshot
		if p := passes[n]; p != nil {
			snap = p.snap
		}
		m, d, w, _ := lastPassOff(snap, sorted, blocks)
		if m+w > 0 {
			offAgents++
		}
		missing += m
		down += d
		wrong += w
	}
	return fmt.Sprintf("%d of %d agents' last pass is off (%d members not alive there, %d of them failed or left; %d with another block or owner)",
		offAgents, len(names), missing, down, wrong)
}

// describe says how agent n sees member w: its status there, first hand
// (Serf) or learned from a notice.
func (s *sim) describe(n, w string) string {
	a := s.all[n]
	// How the running agents see w: one stale view, or many?
	counts := map[string]int{}
	for _, o := range s.all {
		if !o.running() {
			continue
		}
		st := "unknown"
		if s, ok := o.mem.GossipStatus(w); ok {
			st = s
		}
		counts[st]++
	}
	if st, ok := a.mem.GossipStatus(w); ok {
		return fmt.Sprintf("serf status %s; running agents see it: %v", st, counts)
	}
	if failed, heard, ok := a.mem.Learned(w); ok {
		return fmt.Sprintf("learned: failed %s ago, last notice %s ago", time.Since(failed).Round(time.Second), time.Since(heard).Round(time.Second))
	}
	return "unknown"
}

func waitUntil(t testing.TB, d time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	trace := os.Getenv("WEFT_SIM_TRACE") != "" // progress on stderr
	lastTrace := start
	for time.Since(start) < d {
		t0 := time.Now()
		if err = cond(); err == nil {
			return time.Since(start)
		}
		took := time.Since(t0)
		if trace && time.Since(lastTrace) > 10*time.Second {
			// runtime/metrics, not ReadMemStats: that stops the world,
			// which under 1000 agents took half a minute.
			heap := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
			rtmetrics.Read(heap)
			fmt.Fprintf(os.Stderr, "%s after %v (heap %d MiB, check %v): %v\n", what, time.Since(start).Round(time.Second),
				heap[0].Value.Uint64()>>20, took.Round(time.Millisecond), err)
			lastTrace = time.Now()
		}
		// A check over hundreds of agents' views costs real CPU: poll at
		// most a third of the time, or the test starves the gossip it
		// waits for.
		time.Sleep(max(100*time.Millisecond, 2*took))
	}
	t.Fatalf("%s: not within %v: %v", what, d, err)
	return 0
}

// simLogger discards, or with WEFT_SIM_TRACE set prints the agents' lease
// and failed-member messages to stderr.
func simLogger() *slog.Logger {
	if os.Getenv("WEFT_SIM_TRACE") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(traceHandler{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})})
}

type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "newcomer") || strings.Contains(r.Message, "failed before") || strings.Contains(r.Message, "conflict") || strings.Contains(r.Message, "notice") || strings.Contains(r.Message, "telling") || strings.Contains(r.Message, "old query") || strings.Contains(r.Message, "query") {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

// running reports whether the agent has not been stopped.
func (a *simAgent) running() bool {
	select {
	case err := <-a.done:
		a.done <- err // for whoever waits next
		return false
	default:
		a.Agent.mu.Lock()
		defer a.Agent.mu.Unlock()
		return a.Agent.mem != nil
	}
}
