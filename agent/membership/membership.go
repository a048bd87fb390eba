package membership

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"github.com/weftnet/weft/agent/plan"
)

// ErrNoGossipKey is returned when gossip would run unencrypted without the
// operator asking for it.
var ErrNoGossipKey = errors.New("no gossip key: weft encrypts gossip by default; give a key (weft keygen) or set --insecure-gossip")

// Config configures the Serf side of an agent.
type Config struct {
	// NodeName is the member name, normally the Kubernetes node name.
	NodeName string
	// Bind is the gossip address, e.g. 0.0.0.0:7946 (port 0 picks one).
	Bind netip.AddrPort
	// Advertise is the address others reach us at; zero means Bind's (or
	// the address memberlist picks when Bind is unspecified).
	Advertise netip.AddrPort
	// Keys is the gossip keyring; Keys[0] is the primary (used to send).
	// Each key is 16, 24 or 32 bytes (AES-128/192/256-GCM).
	Keys [][]byte
	// Insecure allows running without keys. Never the default.
	Insecure bool
	// Profile tunes memberlist timings: "lan" (default) or "local"
	// (loopback tests and small simulations, much faster failure
	// detection).
	Profile string
	// Timings replaces the profile's timings where set.
	Timings Timings
	// Tags are the initial tags.
	Tags   plan.Tags
	Logger *slog.Logger
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Transport replaces memberlist's UDP/TCP transport (tests that cut
	// the network between members); nil means the real one.
	Transport memberlist.Transport
	// HoldFor is how long a failed member learned from another member's
	// probe ack or notice is kept, and how long this member lists its own
	// failed members in its acks (the lease TTL); 0 means 10 minutes.
	HoldFor time.Duration
	// OnProbe is called after each successful probe (agent.Config.OnProbe).
	OnProbe func()
	// IgnoreAcks learns nothing from probe acks: for tests of the notices,
	// which repair what acks missed.
	IgnoreAcks bool
}

// Timings are memberlist timings that replace a profile's where set
// (non-zero): for a simulation of hundreds of agents sharing a few cores,
// whose probes wait on the scheduler and whose gossip at LAN rates wants
// more CPU than the cores have.
type Timings struct {
	// GossipInterval is the time between gossip rounds, each to
	// GossipNodes members.
	GossipInterval time.Duration
	GossipNodes    int
	// ProbeInterval and ProbeTimeout time the failure detector's probes;
	// SuspicionMult scales how long a suspect has to refute.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	SuspicionMult int
}

// Membership is this agent's view of the mesh, kept by Serf.
type Membership struct {
	serf    *serf.Serf
	keyring *memberlist.Keyring // nil without encryption
	events  chan serf.Event
	changed chan struct{}
	log     *slog.Logger
	now     func() time.Time

	self string // our node name
	mu   sync.Mutex
	seen map[string]seenStatus
	want map[string]string // the tags we last set
	// tagsSet tells the loop that SetTags ran (checkAdvertised).
	tagsSet chan struct{}
	// checking is set while a checkAdvertised runs.
	checking atomic.Bool
	// announce serialises announcements (SetTags and checkAdvertised) from
	// reading want to Serf's SetTags: a check that read the tags before a
	// change must not announce them after it.
	announce sync.Mutex
	rr       int // round robin over failed members
	// decoded caches each member's decoded tags: Members runs on every
	// reconcile and decoding hundreds of tag sets each time shows up.
	decoded map[string]decodedTags
	// learned are failed members known only from notices (failed.go).
	learned map[string]learnedMember
	holdFor time.Duration

	// The held blocks in probe acks (failed.go): the payload this member
	// sends and when it was built, and heard, closed at the first ack.
	ackMu      sync.Mutex
	ack        []byte
	ackAt      time.Time
	heard      chan struct{}
	heardOnce  sync.Once
	heldWait   time.Duration
	ignoreAcks bool
	onProbe    func()

	wg     sync.WaitGroup
	cancel context.CancelFunc
	// announcing counts the announcements SetTags started (tests wait).
	announcing sync.WaitGroup
	once       sync.Once
}

type decodedTags struct {
	raw  map[string]string
	tags plan.Tags
	err  error
}

type seenStatus struct {
	status plan.Status
	since  time.Time
}

// Start creates the Serf instance (it starts listening at once).
func Start(cfg Config) (*Membership, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	tags, err := cfg.Tags.Encode()
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	sc, err := serfConfig(cfg, tags)
	if err != nil {
		return nil, err
	}
	acks := &heldAcks{}
	sc.MemberlistConfig.Ping = acks
	own, err := setTransport(cfg, sc.MemberlistConfig)
	if err != nil {
		return nil, err
	}
	events := make(chan serf.Event, 256)
	sc.EventCh = events
	s, err := serf.Create(sc)
	if err != nil {
		if own != nil {
			own.Shutdown()
		}
		return nil, fmt.Errorf("membership: start serf on %s: %w", cfg.Bind, err)
	}
	m := newMembership(cfg, s, sc.MemberlistConfig, tags, events)
	acks.m.Store(m)
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(2)
	go m.loop(ctx)
	go m.reconnectLoop(ctx)
	return m, nil
}

func (cfg *Config) setDefaults() error {
	if cfg.NodeName == "" {
		return errors.New("membership: node name is empty")
	}
	if len(cfg.Keys) == 0 && !cfg.Insecure {
		return ErrNoGossipKey
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HoldFor <= 0 {
		cfg.HoldFor = 10 * time.Minute
	}
	return nil
}

// serfConfig is Serf's and memberlist's configuration for cfg, with the
// initial tags, but no transport yet.
func serfConfig(cfg Config, tags map[string]string) (*serf.Config, error) {
	sc := serf.DefaultConfig()
	sc.NodeName = cfg.NodeName
	sc.Tags = tags
	sc.RejoinAfterLeave = true
	sc.EnableNameConflictResolution = true
	sc.ValidateNodeNames = true
	// Probe acks carry held blocks instead of Serf's network coordinates,
	// which weft never reads (failed.go).
	sc.DisableCoordinates = true
	switch cfg.Profile {
	case "", "lan":
		sc.MemberlistConfig = lanConfig()
	case "local":
		sc.MemberlistConfig = memberlist.DefaultLocalConfig()
		sc.MemberlistConfig.PushPullInterval = 5 * time.Second
		sc.ReapInterval = time.Second
		sc.ReconnectInterval = 2 * time.Second
	default:
		return nil, fmt.Errorf("membership: profile %q: want lan or local", cfg.Profile)
	}
	mc := sc.MemberlistConfig
	mc.Name = cfg.NodeName
	cfg.Timings.apply(mc)
	// Tag changes (a lease, a key) are rare and must reach every member:
	// retransmit each broadcast more than memberlist's default before
	// push-pull anti-entropy (tens of seconds in a big mesh) repairs a miss.
	mc.RetransmitMult = 6
	// memberlist compresses every gossip packet with LZW by default, which
	// allocates a fresh 16 KiB table per packet: a quarter of the CPU of a
	// 100-agent simulation converging, in a profile, for packets of a few
	// hundred bytes.
	mc.EnableCompression = false
	setAddresses(cfg, mc)
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("membership: gossip keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	sc.Logger = log.New(&logWriter{l: cfg.Logger.With("component", "serf")}, "", 0)
	mc.Logger = sc.Logger
	return sc, nil
}

// lanConfig is memberlist's LAN configuration with weft's gossip rounds:
// 400 ms apart to 8 members. An idle round sends nothing, but it is a
// wakeup of every agent, and at LAN's 200 ms (to 3) or the 100 ms (to 4)
// weft used before, the rounds were the largest share of an idle agent's
// wakeups (each ~0.15 ms of CPU on the benchmark machine). A change still
// reaches a 25-member mesh in two or three rounds, as fast as before: each
// round reaches more members, and a broadcast is sent as many times in all
// (its retransmit limit).
func lanConfig() *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.GossipInterval = 400 * time.Millisecond
	mc.GossipNodes = 8
	return mc
}

// apply sets the timings of t that are set on mc.
func (t Timings) apply(mc *memberlist.Config) {
	if t.GossipInterval > 0 {
		mc.GossipInterval = t.GossipInterval
	}
	if t.GossipNodes > 0 {
		mc.GossipNodes = t.GossipNodes
	}
	if t.ProbeInterval > 0 {
		mc.ProbeInterval = t.ProbeInterval
	}
	if t.ProbeTimeout > 0 {
		mc.ProbeTimeout = t.ProbeTimeout
	}
	if t.SuspicionMult > 0 {
		mc.SuspicionMult = t.SuspicionMult
	}
}

// setAddresses sets the bind and advertised gossip addresses of cfg on mc.
func setAddresses(cfg Config, mc *memberlist.Config) {
	if cfg.Bind.IsValid() {
		mc.BindAddr = cfg.Bind.Addr().String()
		mc.BindPort = int(cfg.Bind.Port())
		mc.AdvertisePort = int(cfg.Bind.Port())
	}
	if cfg.Advertise.IsValid() {
		mc.AdvertiseAddr = cfg.Advertise.Addr().String()
		mc.AdvertisePort = int(cfg.Advertise.Port())
	}
}

// setTransport gives mc cfg's transport, or opens weft's own on the bind
// address (returned, for the caller to shut down should Serf not start).
func setTransport(cfg Config, mc *memberlist.Config) (*Transport, error) {
	if cfg.Transport != nil {
		mc.Transport = cfg.Transport
		return nil, nil
	}
	bind := netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(mc.BindPort))
	if cfg.Bind.IsValid() {
		bind = cfg.Bind
	}
	own, err := NewTransport(bind, mc.Logger)
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	if mc.BindPort == 0 {
		mc.BindPort = own.Port()
		if mc.AdvertisePort == 0 {
			mc.AdvertisePort = own.Port()
		}
	}
	mc.Transport = own
	return own, nil
}

// newMembership is the Membership of a created Serf instance, before its
// loops run.
func newMembership(cfg Config, s *serf.Serf, mc *memberlist.Config, tags map[string]string, events chan serf.Event) *Membership {
	return &Membership{
		want:    tags,
		self:    cfg.NodeName,
		serf:    s,
		keyring: mc.Keyring,
		events:  events,
		changed: make(chan struct{}, 1),
		tagsSet: make(chan struct{}, 1),
		log:     cfg.Logger,
		now:     cfg.Now,
		seen:    map[string]seenStatus{},
		learned: map[string]learnedMember{},
		decoded: map[string]decodedTags{},
		holdFor: cfg.HoldFor,

		heard:      make(chan struct{}),
		heldWait:   2*mc.ProbeInterval + mc.ProbeTimeout,
		ignoreAcks: cfg.IgnoreAcks,
		onProbe:    cfg.OnProbe,
	}
}

// loop drains Serf's events; every member event marks the view changed.
func (m *Membership) loop(ctx context.Context) {
	defer m.wg.Done()
	// Check what memberlist advertises for us (checkAdvertised): soon
	// after each change of our tags, then every selfCheck.
	check := time.NewTimer(jitter(selfCheck))
	defer check.Stop()
	// The first check after a change announces the tags once more in any
	// case. A change of our tags (a lease, a key) is the one message every
	// member must get, and memberlist neither confirms delivery nor repeats
	// a broadcast once its retransmissions are spent; anti-entropy
	// (push-pull) repairs a miss only after tens of seconds. In the
	// real-node cluster a new node's lease reached nobody for 42 s once in
	// about a dozen installs on a loaded machine, although the node's own
	// memberlist took the new tags at once (its update event is in the
	// log); pods on the other nodes could not reach its pods meanwhile. So
	// each change goes out twice, the second time 1-3 s later with a new
	// incarnation. Members that had the first take the second as no change
	// (the tags are compared below), so it costs one small broadcast.
	again := false
	lastTags := map[string]map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.tagsSet:
			check.Reset(jitter(selfCheckAfterSet))
			again = true
		case <-check.C:
			// Apart from this loop: an announcement waits up to Serf's
			// BroadcastTimeout (5 s) for its broadcast, and meanwhile
			// Serf's event channel must be drained. Serf sends to it with
			// memberlist's node lock held, so a full channel would stop
			// gossip and probes too.
			if m.checking.CompareAndSwap(false, true) {
				m.wg.Add(1)
				go func(again bool) {
					defer m.wg.Done()
					defer m.checking.Store(false)
					m.checkAdvertised(again)
				}(again)
				again = false
			}
			check.Reset(jitter(selfCheck))
		case ev := <-m.events:
			switch ev := ev.(type) {
			case serf.MemberEvent:
				changed := false
				for _, mem := range ev.Members {
					m.stamp(mem.Name, statusOf(mem.Status))
					// Serf reports a re-announcement of the same tags as an
					// update (its msgpack map order is random): not a change.
					if ev.Type == serf.EventMemberUpdate && maps.Equal(lastTags[mem.Name], mem.Tags) {
						continue
					}
					changed = true
					if ev.Type == serf.EventMemberReap {
						delete(lastTags, mem.Name)
					} else {
						lastTags[mem.Name] = mem.Tags
					}
					m.log.Debug("member event", "event", ev.Type.String(), "member", mem.Name, "status", mem.Status.String())
				}
				if changed {
					m.notify()
				}
			case *serf.Query:
				m.handleQuery(ev)
			}
		}
	}
}

func (m *Membership) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Changed fires (coalesced) whenever a member joins, leaves, fails, or
// changes its tags.
func (m *Membership) Changed() <-chan struct{} { return m.changed }

// Join contacts existing members ("host:port"; port defaults to 7946).
// It returns how many it reached.
func (m *Membership) Join(addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	n, err := m.serf.Join(addrs, true)
	if err != nil && n == 0 {
		return 0, fmt.Errorf("membership: join %v: %w", addrs, err)
	}
	return n, nil
}

// SetTags sets new tags and announces them in the background: Members
// shows them for this member at once. Serf's SetTags returns only once
// memberlist has sent the update its last time (a few gossip rounds; up to
// Serf's BroadcastTimeout, 5 s), and a newcomer that waited for that after
// claiming its block opened its device ~1 s late (BenchmarkMesh25).
func (m *Membership) SetTags(t plan.Tags) error {
	tags, err := t.Encode()
	if err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	m.mu.Lock()
	m.want = tags
	m.mu.Unlock()
	select {
	case m.tagsSet <- struct{}{}:
	default:
	}
	m.wg.Add(1)
	m.announcing.Add(1)
	go func() {
		defer m.wg.Done()
		defer m.announcing.Done()
		m.announceWant()
	}()
	return nil
}

// announceWant hands memberlist the tags set last (SetTags). Each
// announcement takes the latest tags, so the last to run announces what was
// set last, and one that finds them announced already does nothing.
func (m *Membership) announceWant() {
	m.announce.Lock()
	defer m.announce.Unlock()
	if want, stale := m.advertisedStale(); stale {
		m.sendTags(want)
	}
}

// checkAdvertised announces our tags again when memberlist advertises
// others. memberlist (v0.7.0) can drop a tag update for good: UpdateNode
// takes an incarnation number before it locks, and a refutation running at
// the same moment (common on a busy node whose probes time out) takes a
// higher one and re-broadcasts the old metadata; the update is then "older"
// and discarded, and every later refutation and push-pull repeats the old
// tags. Every member's view then holds our old tags (an old block) while we
// hold the new one. Serf's LocalMember is memberlist's accepted state of us
// (Serf updates it from memberlist's update events), so comparing it with
// what we set finds exactly that case.
//
// Only on a difference: Serf encodes tags as a msgpack map in random key
// order, so even unchanged tags look changed to every member, and a
// periodic re-announcement makes the whole mesh gossip and reconcile.
//
// again announces even when memberlist advertises what we want (the first
// check after a change, see loop). It reports whether it announced.
func (m *Membership) checkAdvertised(again bool) bool {
	m.announce.Lock()
	defer m.announce.Unlock()
	want, stale := m.advertisedStale()
	if stale {
		m.log.Info("memberlist advertises old tags for us; announcing again")
	} else if !again {
		return false
	}
	m.sendTags(want)
	return true
}

// advertisedStale returns the tags set last and whether memberlist
// advertises others for us. The caller holds m.announce, so that
// announcements take turns.
func (m *Membership) advertisedStale() (want map[string]string, stale bool) {
	m.mu.Lock()
	want = m.want
	m.mu.Unlock()
	return want, !maps.Equal(m.serf.LocalMember().Tags, want)
}

// errBroadcastPending is Serf's SetTags running out of time to see the
// update broadcast (Serf's BroadcastTimeout, on a busy node): Serf and
// memberlist have taken the tags, and gossip carries them on.
var errBroadcastPending = errors.New("tag update taken; its broadcast is not confirmed yet")

// sendTags hands want to Serf, which broadcasts it, and logs the outcome.
func (m *Membership) sendTags(want map[string]string) {
	err := m.setSerfTags(want)
	switch {
	case err == nil:
	case errors.Is(err, errBroadcastPending):
		m.log.Info("tag update not yet spread; gossip carries it on", "err", err)
	default:
		m.log.Warn("announcing tags failed", "err", err)
	}
}

// setSerfTags is Serf's SetTags with its one failure after the update was
// taken told apart as errBroadcastPending. Serf refuses, before taking
// them, tags that encode to more than memberlist.MetaMaxSize bytes
// (plan.Tags.Encode refuses those already); past that check the only
// error left is memberlist's UpdateNode timing out on the broadcast.
func (m *Membership) setSerfTags(want map[string]string) error {
	err := m.serf.SetTags(want)
	if err == nil || plan.TagsSize(want) > memberlist.MetaMaxSize {
		return err
	}
	return fmt.Errorf("%w: %v", errBroadcastPending, err)
}

// selfCheck is how often checkAdvertised runs (jittered), and
// selfCheckAfterSet how soon after SetTags: a lost update is found within
// seconds of the change that races.
const (
	selfCheck         = 15 * time.Second
	selfCheckAfterSet = 2 * time.Second
)

func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d) }

// reconnectLoop runs reconnectFailed every 10 s, apart from the event loop: a
// join to a member that is really gone blocks for the TCP timeout. It is
// slow on purpose: each try is a full-state push-pull.
func (m *Membership) reconnectLoop(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.reconnectFailed()
		}
	}
}

// reconnectFailed contacts a few members we see as failed. A member can be
// declared dead by a single node under load and stay dead there:
// memberlist lets that dead state beat every alive message of the same
// incarnation, and only the member itself can refute it, once it hears of
// it. Serf's own reconnect tries a failed member with a probability of
// failed/alive per interval (minutes in a big mesh); a push-pull with the
// member now makes it refute within a round trip, or fails fast if it is
// really gone.
//
// Each round tries the two members that failed most recently (a false
// verdict is a recent one) and one more in turn, at once: with twenty real
// failures in the view, one at a time in turn took minutes to reach a
// member that had only flapped.
//
// A verdict spreads to every view, so every agent would try the same
// member at once: only about reconnectFanout agents of the whole mesh take
// part in a round (takesPart).
func (m *Membership) reconnectFailed() {
	type failedMember struct {
		addr  string
		since time.Time
	}
	var failed []failedMember
	now := m.now()
	m.mu.Lock()
	seen := maps.Clone(m.seen)
	m.mu.Unlock()
	alive := 0
	for _, sm := range m.serf.Members() {
		if sm.Status == serf.StatusAlive {
			alive++
		}
		if sm.Status == serf.StatusFailed {
			since := now
			if s, ok := seen[sm.Name]; ok && s.status == plan.StatusFailed {
				since = s.since
			}
			failed = append(failed, failedMember{net.JoinHostPort(sm.Addr.String(), strconv.Itoa(int(sm.Port))), since})
		}
	}
	if len(failed) == 0 || !takesPart(alive, rand.N) {
		return
	}
	slices.SortFunc(failed, func(a, b failedMember) int { return cmp.Or(b.since.Compare(a.since), strings.Compare(a.addr, b.addr)) })
	try := map[string]bool{}
	for _, f := range failed[:min(2, len(failed))] {
		try[f.addr] = true
	}
	m.mu.Lock()
	m.rr++
	try[failed[m.rr%len(failed)].addr] = true
	m.mu.Unlock()
	var wg sync.WaitGroup
	for addr := range try {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.pushPull(addr, "reconnected to a member we saw failed")
		}()
	}
	wg.Wait()
}

// reconnectFanout is how many agents of a mesh, on average, try failed
// members in one reconnect round. With every agent trying, a false verdict
// in a 1000-member simulation drew 1000 full-state push-pulls to one member
// every 10 s: the storm kept the machine overloaded and made more false
// verdicts. A member that is really gone costs each try a refused dial.
const reconnectFanout = 8

// takesPart says whether this agent, seeing alive members alive (itself
// included), takes part in a reconnect round: always in a mesh of at most
// reconnectFanout, else with probability reconnectFanout/alive. An agent cut
// off from the rest sees itself alone and always tries. randN is
// rand.N[int], a parameter for tests.
func takesPart(alive int, randN func(int) int) bool {
	return alive <= reconnectFanout || randN(alive) < reconnectFanout
}

// pushPull exchanges full state with the member at addr: memberlist's
// Join is a push-pull over TCP bounded by its TCP timeout, and Serf merges
// the state it brings (members that left, Lamport times). Not Serf's Join:
// that also broadcasts a join intent, and intents take the room of a
// gossip packet before queries do; one per reconnect or resync starved
// the failed-member notices (failed.go) of a 200-member churn for minutes.
func (m *Membership) pushPull(addr, why string) bool {
	if _, err := m.serf.Memberlist().Join([]string{addr}); err != nil {
		return false
	}
	m.log.Debug(why, "addr", addr)
	return true
}

// Resync exchanges full state with one alive member picked at random: the
// agent's repair of a view it has reason to doubt (a member it thinks
// failed still holds a block that a live member announces: the others may
// have seen that member leave).
func (m *Membership) Resync(except string) {
	var alive []string
	self := m.serf.LocalMember().Name
	for _, sm := range m.serf.Members() {
		if sm.Status == serf.StatusAlive && sm.Name != self && sm.Name != except {
			alive = append(alive, net.JoinHostPort(sm.Addr.String(), strconv.Itoa(int(sm.Port))))
		}
	}
	if len(alive) == 0 {
		return
	}
	addr := alive[rand.N(len(alive))]
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.pushPull(addr, "resynced with a member")
	}()
}

// Members returns every member Serf knows, self included, sorted by name,
// with decoded tags (or TagsErr) and the time each entered its status.
func (m *Membership) Members() []plan.Member {
	now := m.now()
	sms := m.serf.Members()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]plan.Member, 0, len(sms))
	present := make(map[string]bool, len(sms))
	for _, sm := range sms {
		present[sm.Name] = true
		out = append(out, m.member(sm, now))
	}
	for name := range m.seen {
		if !present[name] {
			delete(m.seen, name) // reaped by Serf
			delete(m.decoded, name)
		}
	}
	out = append(out, m.learnedMembers(present, now)...)
	slices.SortFunc(out, func(a, b plan.Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// member converts Serf's view of one member, stamping a status change
// seen first here. m.mu is held.
func (m *Membership) member(sm serf.Member, now time.Time) plan.Member {
	st := statusOf(sm.Status)
	seen, ok := m.seen[sm.Name]
	if !ok || seen.status != st {
		seen = seenStatus{status: st, since: now}
		m.seen[sm.Name] = seen
	}
	if sm.Name == m.self {
		// What we set, while memberlist may still be taking it
		// (SetTags).
		sm.Tags = m.want
	}
	mem := plan.Member{Name: sm.Name, Status: st, Since: seen.since}
	if a, ok := netip.AddrFromSlice(sm.Addr); ok {
		mem.Addr = netip.AddrPortFrom(a.Unmap(), sm.Port)
	}
	// Serf swaps in a new tag map on every update and never edits one in
	// place, so the map's identity tells whether it changed.
	d, ok := m.decoded[sm.Name]
	if !ok || reflect.ValueOf(d.raw).UnsafePointer() != reflect.ValueOf(sm.Tags).UnsafePointer() {
		d.raw = sm.Tags
		d.tags, d.err = plan.DecodeTags(sm.Tags)
		m.decoded[sm.Name] = d
	}
	mem.Tags, mem.TagsErr = d.tags, d.err
	return mem
}

// failedFirstHand returns the members Serf itself reports failed, unsorted:
// Members without the learned ones, the sort and the copies of the alive
// majority, for the probe acks that list them (failed.go).
func (m *Membership) failedFirstHand() []plan.Member {
	now := m.now()
	sms := m.serf.Members()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []plan.Member
	for _, sm := range sms {
		if sm.Status == serf.StatusFailed {
			out = append(out, m.member(sm, now))
		}
	}
	return out
}

// OthersAlive reports whether any other member is alive (or suspected, not
// yet failed) in memberlist's view, without copying the members.
func (m *Membership) OthersAlive() bool {
	return m.serf.Memberlist().NumMembers() > 1
}

// stamp records when a member's status changed, as Serf reports it. The
// time a member failed starts its lease TTL, so it is taken when the event
// comes, not when Members next runs: a reconcile pass may be seconds away
// (paced), and a failure stamped late keeps the member's block held late.
// A reaped member is forgotten by Members.
func (m *Membership) stamp(name string, st plan.Status) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.seen[name]; !ok || s.status != st {
		m.seen[name] = seenStatus{status: st, since: now}
	}
}

func statusOf(s serf.MemberStatus) plan.Status {
	switch s {
	case serf.StatusFailed:
		return plan.StatusFailed
	case serf.StatusLeft:
		return plan.StatusLeft
	}
	return plan.StatusAlive // alive, leaving, none
}

// LocalAddr is the gossip address this member advertises.
func (m *Membership) LocalAddr() netip.AddrPort {
	lm := m.serf.LocalMember()
	a, _ := netip.AddrFromSlice(lm.Addr)
	return netip.AddrPortFrom(a.Unmap(), lm.Port)
}

// Encrypted reports whether gossip is encrypted.
func (m *Membership) Encrypted() bool { return m.serf.EncryptionEnabled() }

// RotateGossipKey installs key on every member, makes it the primary, and
// removes old: Serf's install -> use -> remove, each step cluster-wide.
func (m *Membership) RotateGossipKey(key, old []byte) error {
	km := m.serf.KeyManager()
	enc := encodeKey(key)
	if _, err := km.InstallKey(enc); err != nil {
		return fmt.Errorf("gossip key rotation: install: %w", err)
	}
	if _, err := km.UseKey(enc); err != nil {
		return fmt.Errorf("gossip key rotation: use: %w", err)
	}
	if old != nil {
		if _, err := km.RemoveKey(encodeKey(old)); err != nil {
			return fmt.Errorf("gossip key rotation: remove old: %w", err)
		}
	}
	return nil
}

// Leave tells the mesh this member is going away for good: its lease is
// freed at once.
func (m *Membership) Leave() error {
	if err := m.serf.Leave(); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// Close shuts Serf down (without leaving: the others see a failure) and
// stops the event loop.
func (m *Membership) Close() error {
	var err error
	m.once.Do(func() {
		err = m.serf.Shutdown()
		m.cancel()
		m.wg.Wait()
	})
	return err
}

// logWriter turns the "[LEVEL] text" lines of Serf's and memberlist's
// standard loggers into slog records.
type logWriter struct{ l *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	lvl := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError, "[ERROR]": slog.LevelError} {
		if len(line) >= len(prefix) && line[:len(prefix)] == prefix {
			lvl = l
			line = string(bytes.TrimSpace([]byte(line[len(prefix):])))
			break
		}
	}
	w.l.Log(context.Background(), lvl, line)
	return len(p), nil
}

var _ io.Writer = (*logWriter)(nil)

// ParseJoinAddr normalises "host", "host:port" or "[v6]:port" with the
// default gossip port 7946.
func ParseJoinAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = s, "7946"
	}
	if host == "" {
		return "", fmt.Errorf("join address %q: no host", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("join address %q: bad port", s)
	}
	return net.JoinHostPort(host, port), nil
}
