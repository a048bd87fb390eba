package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
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
