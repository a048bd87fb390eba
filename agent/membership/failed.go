package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"github.com/weftnet/weft/agent/plan"
)

// A member that fails is known only to the members that saw it alive:
// memberlist passes dead nodes to nobody who joins later (its push-pull
// merge ignores dead and suspect nodes it has never heard of), so a
// newcomer cannot see that a block is held for a failed member's TTL and
// may claim it. The members that saw the failure tell it, two ways: every
// probe ack carries the prober the held blocks its target saw fail (see
// ackBudget), so a newcomer learns them with its first probe, before it
// claims a block; and members that see a newcomer claim a held block
// anyway send it a notice, a Serf query addressed to it alone. The
// newcomer keeps the failed members in its view ("learned") until the TTL
// has run, loses any conflict there too, and re-leases. This is rule 3 of
// the lease rules for members that were not there when the failure
// happened.

// failedQuery is the name of the Serf query that carries failed members.
const failedQuery = "weft-failed"

// maxLearned bounds how many failed members a node keeps from notices.
const maxLearned = 4096

// noticeBudget is the most payload bytes one notice carries. A query is
// gossiped in one UDP packet (memberlist packs at most 1400 bytes) next to
// its header and filter (Serf refuses one over 1024 bytes in all), and it
// goes into a packet only after Serf's queued intents and events: a query
// near the limit waited minutes for a packet with that much room while a
// churn kept the intent queue busy. Small notices slip into the gaps.
const noticeBudget = 400

// heldLease is one failed member's claim, as a notice carries it: only what
// the lease rules need, so that a notice holds many.
type heldLease struct {
	Name  string `json:"n"`
	Block string `json:"b"`
	Lt    int64  `json:"l"`
	// FailedFor is how long ago the sender saw the member fail, in ms: a
	// duration, not a timestamp, so clocks need not agree.
	FailedFor int64 `json:"f"`
}

// learnedMember is a failed member this node knows of only from a notice.
type learnedMember struct {
	block netip.Prefix
	lt    int64
	since time.Time // when it failed
	heard time.Time // when the last notice about it came
}

// learnedFor is how long a learned member is kept after the last notice
// about it. Notices repeat (NoticeEvery) while a newcomer claims a held
// block; a short memory lets a notice that was wrong (its sender had missed
// the member's leave and thought it failed) fade once nobody repeats it.
const learnedFor = 2*NoticeEvery + 10*time.Second

// TellFailed tells member `to` about the failed members in held (all the
// sender knows within their TTL, so that a newcomer does not stumble from
// one held block to the next), in as many queries as their size needs. It
// does not wait for delivery.
func (m *Membership) TellFailed(to string, held []plan.Member, now time.Time) error {
	return batchHeld(held, now, func(payload []byte) error {
		// The query is gossiped like any other; only `to` acts on it.
		// Nobody answers, so the response is left to time out.
		if _, err := m.serf.Query(failedQuery, payload, &serf.QueryParam{FilterNodes: []string{to}}); err != nil {
			return fmt.Errorf("membership: tell %s about failed members: %w", to, err)
		}
		return nil
	})
}

// batchHeld encodes the failed members of held with a block into notices
// of at most noticeBudget bytes and passes each to send.
func batchHeld(held []plan.Member, now time.Time, send func([]byte) error) error {
	entries := heldEntries(held, now)
	for len(entries) > 0 {
		payload, rest, err := packHeld(entries, noticeBudget)
		if err != nil {
			return err
		}
		if err := send(payload); err != nil {
			return err
		}
		entries = rest
	}
	return nil
}

// heldEntries lists the failed members of held that have a block, as a
// notice carries them.
func heldEntries(held []plan.Member, now time.Time) []heldLease {
	var out []heldLease
	for _, f := range held {
		if f.Status != plan.StatusFailed || f.TagsErr != nil || !f.Tags.Block.IsValid() {
			continue
		}
		out = append(out, heldLease{Name: f.Name, Block: f.Tags.Block.String(), Lt: f.Tags.LeaseTime, FailedFor: max(0, now.Sub(f.Since).Milliseconds())})
	}
	return out
}

// packHeld encodes the first entries that fit in budget bytes (at least
// one: a name is at most 128 bytes, an entry well under any budget here)
// and returns the rest.
func packHeld(entries []heldLease, budget int) ([]byte, []heldLease, error) {
	size, n := 2, 0 // the brackets
	for ; n < len(entries); n++ {
		b, err := json.Marshal(entries[n])
		if err != nil {
			return nil, nil, err
		}
		if n > 0 && size+len(b)+1 > budget {
			break
		}
		size += len(b) + 1
	}
	payload, err := json.Marshal(entries[:n])
	return payload, entries[n:], err
}

// handleQuery takes a failed-member notice.
func (m *Membership) handleQuery(q *serf.Query) {
	if q.Name != failedQuery {
		return
	}
	held, err := parseFailedNotice(q.Payload, m.holdFor)
	if err != nil {
		m.log.Warn("ignoring a failed-member notice", "from", q.SourceNode(), "err", err)
		return
	}
	if added := m.learn(held); len(added) > 0 {
		m.log.Info("learned of members that failed before we joined", "members", added, "from", q.SourceNode(), "via", "notice")
	}
}

// learn keeps the failed members of a notice or ack that Serf does not
// know, and returns the names it had not learned yet.
func (m *Membership) learn(held []heldLease) []string {
	if len(held) == 0 {
		return nil // most acks: nothing is held
	}
	known := map[string]bool{}
	for _, sm := range m.serf.Members() {
		known[sm.Name] = true
	}
	now := m.now()
	var added []string
	m.mu.Lock()
	for _, h := range held {
		if known[h.Name] {
			continue // we know it first hand
		}
		_, had := m.learned[h.Name]
		if !had && len(m.learned) >= maxLearned {
			continue
		}
		block, _ := netip.ParsePrefix(h.Block) // checked by parseHeld
		m.learned[h.Name] = learnedMember{block: block, lt: h.Lt, since: now.Add(-time.Duration(h.FailedFor) * time.Millisecond), heard: now}
		if !had {
			added = append(added, h.Name)
		}
	}
	m.mu.Unlock()
	if len(added) > 0 {
		m.notify()
	}
	return added
}

// Probe acks carry held blocks. memberlist probes one member a probe
// interval (1 s on a LAN) and the probed member's ack carries a payload of
// our choosing: each member puts in it the failed members it saw fail
// itself that still hold a block, and a member that probes another learns
// them. Point to point, no gossip: a newcomer knows the held blocks after
// its first probe, before it claims one (Run waits for it, HeardHeld), and
// every probe after that refreshes what it learned. Notices (failedQuery)
// still repair a claim that raced the first ack. Serf's network
// coordinates used the same payload; weft never reads them and turns them
// off (Start), which also saves their per-probe cost.
//
// Only first-hand failures go into an ack: learned members passed from
// newcomer to newcomer would outlive the notices of a sender that was
// wrong (it missed a leave). A list of more than ackBudget bytes (about 18
// members) goes out as a random part of it, a different part each time.
const ackBudget = 1000

// ackEvery is how long an ack payload is reused: a member answers a probe
// about once a probe interval, and building the list reads every member.
const ackEvery = time.Second

// heldAcks is memberlist's ping delegate. memberlist takes it before Serf
// exists, so it reaches the Membership through m, set once Serf runs.
type heldAcks struct{ m atomic.Pointer[Membership] }

func (h *heldAcks) AckPayload() []byte {
	if m := h.m.Load(); m != nil {
		return m.ackPayload()
	}
	return nil
}

func (h *heldAcks) NotifyPingComplete(other *memberlist.Node, _ time.Duration, payload []byte) {
	m := h.m.Load()
	if m == nil {
		return
	}
	if m.onProbe != nil {
		m.onProbe()
	}
	if payload != nil {
		m.takeAck(other.Name, payload)
	}
}

// ackPayload is the list of first-hand failed members that hold a block
// within the hold time ("[]" when there is none: a prober learns that
// nothing is held).
func (m *Membership) ackPayload() []byte {
	now := m.now()
	m.ackMu.Lock()
	defer m.ackMu.Unlock()
	if m.ack != nil && now.Sub(m.ackAt) >= 0 && now.Sub(m.ackAt) < ackEvery {
		return m.ack
	}
	var held []plan.Member
	for _, f := range m.failedFirstHand() {
		if now.Sub(f.Since) < m.holdFor {
			held = append(held, f)
		}
	}
	entries := heldEntries(held, now)
	rand.Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
	payload := []byte("[]")
	if len(entries) > 0 {
		var err error
		if payload, _, err = packHeld(entries, ackBudget); err != nil {
			m.log.Warn("listing held blocks for probe acks", "err", err)
			payload = []byte("[]")
		}
	}
	m.ack, m.ackAt = payload, now
	return payload
}

// takeAck learns the held blocks in the ack of a probe of member from.
func (m *Membership) takeAck(from string, payload []byte) {
	if m.ignoreAcks {
		return
	}
	if len(payload) == 0 || payload[0] != '[' {
		// Not a list: a version of weft that sent Serf's coordinates in
		// acks, during a rolling update. Nothing to learn, nothing wrong.
		return
	}
	held, err := parseHeld(payload, m.holdFor)
	if err != nil {
		m.log.Warn("ignoring held blocks in a probe ack", "from", from, "err", err)
		return
	}
	if added := m.learn(held); len(added) > 0 {
		m.log.Info("learned of members that failed before we joined", "members", added, "from", from, "via", "probe ack")
	}
	m.heardOnce.Do(func() { close(m.heard) })
}

// HeardHeld is closed once a probe ack has told this member which blocks
// are held (or that none is).
func (m *Membership) HeardHeld() <-chan struct{} { return m.heard }

// HeldWait bounds how long a newcomer waits for HeardHeld: the first probe
// comes within a probe interval of the join, the second if the first went
// to a member that did not answer in time.
func (m *Membership) HeldWait() time.Duration { return m.heldWait }

// parseFailedNotice decodes and checks a notice, which names at least one
// member.
func parseFailedNotice(b []byte, hold time.Duration) ([]heldLease, error) {
	held, err := parseHeld(b, hold)
	if err == nil && len(held) == 0 {
		err = errors.New("no member in the notice")
	}
	return held, err
}

// parseHeld decodes and checks a list of held leases (a notice, or a
// probe ack, which may be empty). An entry older than hold is of no use
// and dropped (the sender may hold blocks longer: its own TTL flag); any
// malformed entry rejects the list.
func parseHeld(b []byte, hold time.Duration) ([]heldLease, error) {
	var all []heldLease
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	held := all[:0]
	for _, h := range all {
		if h.Name == "" || len(h.Name) > 128 {
			return nil, errors.New("bad member name")
		}
		if h.FailedFor < 0 {
			return nil, fmt.Errorf("member %s failed %d ms ago: in the future", h.Name, h.FailedFor)
		}
		p, err := netip.ParsePrefix(h.Block)
		if err != nil || p != p.Masked() {
			return nil, fmt.Errorf("member %s: block %q is not a network prefix", h.Name, h.Block)
		}
		if h.Lt < 0 {
			return nil, fmt.Errorf("member %s: claim time %d before 1970", h.Name, h.Lt)
		}
		if h.FailedFor <= hold.Milliseconds() {
			held = append(held, h)
		}
	}
	return held, nil
}

// learnedMembers returns the learned failed members that Serf does not know,
// within the hold time and heard of lately (learnedFor), dropping the rest. Their tags carry
// only the claim (block and time): all that the lease rules read of a
// failed member. Callers hold m.mu.
func (m *Membership) learnedMembers(present map[string]bool, now time.Time) []plan.Member {
	var out []plan.Member
	for name, l := range m.learned {
		if present[name] || now.Sub(l.since) > m.holdFor || now.Sub(l.heard) > learnedFor {
			delete(m.learned, name)
			continue
		}
		out = append(out, plan.Member{Name: name, Status: plan.StatusFailed, Since: l.since,
			Tags: plan.Tags{Version: plan.TagVersion, Block: l.block, LeaseTime: l.lt}})
	}
	return out
}

// NoticeEvery is how often a newcomer that still claims a held block is
// told again.
const NoticeEvery = 30 * time.Second
