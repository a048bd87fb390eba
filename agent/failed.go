package agent

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/serf/serf"
)

// A member that fails is known only to the members that saw it alive:
// memberlist passes dead nodes to nobody who joins later (its push-pull
// merge ignores dead and suspect nodes it has never heard of), so a
// newcomer cannot see that a block is held for a failed member's TTL and
// may claim it. The members that do know see the conflict (the failed
// member's earlier claim wins) and tell the newcomer with a Serf query
// addressed to it alone; the newcomer keeps the failed member in its view
// ("learned") until the TTL has run, loses the conflict there too, and
// re-leases. This is rule 3 of the lease rules for members that were not
// there when the failure happened.

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
// about it. Notices repeat (noticeEvery) while a newcomer claims a held
// block; a short memory lets a notice that was wrong (its sender had missed
// the member's leave and thought it failed) fade once nobody repeats it.
const learnedFor = 2*noticeEvery + 10*time.Second

// TellFailed tells member `to` about the failed members in held (all the
// sender knows within their TTL, so that a newcomer does not stumble from
// one held block to the next), in as many queries as their size needs. It
// does not wait for delivery.
func (m *Membership) TellFailed(to string, held []Member, now time.Time) error {
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
func batchHeld(held []Member, now time.Time, send func([]byte) error) error {
	var batch []heldLease
	size := 2 // the brackets
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		payload, err := json.Marshal(batch)
		if err != nil {
			return err
		}
		batch, size = nil, 2
		return send(payload)
	}
	for _, f := range held {
		if f.Status != StatusFailed || f.TagsErr != nil || !f.Tags.Block.IsValid() {
			continue
		}
		h := heldLease{Name: f.Name, Block: f.Tags.Block.String(), Lt: f.Tags.LeaseTime, FailedFor: max(0, now.Sub(f.Since).Milliseconds())}
		b, err := json.Marshal(h)
		if err != nil {
			return err
		}
		if size+len(b)+1 > noticeBudget {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, h)
		size += len(b) + 1
	}
	return flush()
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
		block, _ := netip.ParsePrefix(h.Block) // checked by parseFailedNotice
		m.learned[h.Name] = learnedMember{block: block, lt: h.Lt, since: now.Add(-time.Duration(h.FailedFor) * time.Millisecond), heard: now}
		if !had {
			added = append(added, h.Name)
		}
	}
	m.mu.Unlock()
	if len(added) > 0 {
		m.log.Info("learned of members that failed before we joined", "members", added, "from", q.SourceNode())
		m.notify()
	}
}

// parseFailedNotice decodes and checks a notice. An entry older than hold
// is of no use; any bad entry rejects the notice.
func parseFailedNotice(b []byte, hold time.Duration) ([]heldLease, error) {
	var held []heldLease
	if err := json.Unmarshal(b, &held); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if len(held) == 0 {
		return nil, errors.New("no member in the notice")
	}
	for _, h := range held {
		if h.Name == "" || len(h.Name) > 128 {
			return nil, errors.New("bad member name")
		}
		if h.FailedFor < 0 || time.Duration(h.FailedFor)*time.Millisecond > hold {
			return nil, fmt.Errorf("member %s failed %d ms ago, outside the hold time %s", h.Name, h.FailedFor, hold)
		}
		p, err := netip.ParsePrefix(h.Block)
		if err != nil || p != p.Masked() {
			return nil, fmt.Errorf("member %s: block %q is not a network prefix", h.Name, h.Block)
		}
		if h.Lt < 0 {
			return nil, fmt.Errorf("member %s: claim time %d before 1970", h.Name, h.Lt)
		}
	}
	return held, nil
}

// learnedMembers returns the learned failed members that Serf does not know,
// within the hold time and heard of lately (learnedFor), dropping the rest. Their tags carry
// only the claim (block and time): all that the lease rules read of a
// failed member. Callers hold m.mu.
func (m *Membership) learnedMembers(present map[string]bool, now time.Time) []Member {
	var out []Member
	for name, l := range m.learned {
		if present[name] || now.Sub(l.since) > m.holdFor || now.Sub(l.heard) > learnedFor {
			delete(m.learned, name)
			continue
		}
		out = append(out, Member{Name: name, Status: StatusFailed, Since: l.since,
			Tags: Tags{Version: TagVersion, Block: l.block, LeaseTime: l.lt}})
	}
	return out
}

// noticeSenders is how many of the members that saw a failure tell a
// newcomer about it. One: a notice is a Serf query, which every member
// relays (a FilterNodes query is still gossiped to all), so each extra
// sender multiplies the gossip load; in a 200-member churn, three senders
// retelling every 10 s queued over a minute of queries. Views that differ
// can make two members think they are first; that is fine.
const noticeSenders = 1

// noticeEvery is how often a newcomer that still claims a held block is
// told again.
const noticeEvery = 30 * time.Second

// senderPool is how many of the oldest members share the telling.
const senderPool = 16

// failedWinners returns, for each conflict in which an alive member lost a
// block to a failed one, the pair to tell, if self is one of the
// noticeSenders members picked to tell it: among the senderPool alive
// members with the oldest claims, the first by a hash of their name and
// the loser's. Old members saw every failure that still holds a block,
// so their notices list every held block; a member that joined after a
// failure may never have seen the failed member (memberlist hands a
// newcomer no dead or suspect node), and when "there before the failure"
// was judged by when this node noticed the failure, newcomers that joined
// during the detection counted as senders and told nobody. Claim times
// come from the tags, so every member picks the same senders. Pure: the
// agent passes its view.
func failedWinners(self string, members []Member, leases Leases) []Conflict {
	byName := make(map[string]Member, len(members))
	var old []Member
	for _, m := range members {
		byName[m.Name] = m
		if m.Status == StatusAlive && m.TagsErr == nil && m.Tags.Block.IsValid() {
			old = append(old, m)
		}
	}
	slices.SortFunc(old, func(a, b Member) int {
		return cmp.Or(cmp.Compare(a.Tags.LeaseTime, b.Tags.LeaseTime), strings.Compare(a.Name, b.Name))
	})
	var out []Conflict
	for _, c := range leases.Conflicts {
		w, l := byName[c.Winner], byName[c.Loser]
		if w.Status != StatusFailed || l.Status != StatusAlive || l.Name == self {
			continue
		}
		var pool []string
		for _, m := range old {
			if m.Name != l.Name && len(pool) < senderPool {
				pool = append(pool, m.Name)
			}
		}
		slices.SortFunc(pool, func(a, b string) int { return cmp.Compare(rank(a, l.Name), rank(b, l.Name)) })
		if slices.Contains(pool[:min(len(pool), noticeSenders)], self) {
			out = append(out, c)
		}
	}
	return out
}

// rank orders the candidate senders for one loser. FNV-1a alone is not a
// ranking: with the loser's name as a common suffix, the order of the
// sums is set by the candidates' prefixes, and one member ("node111" of
// node040..node199) ranked first for every newcomer of a 200-agent churn,
// so one agent, with whatever view it had, sent every notice. The
// finalizer of MurmurHash3 (fmix64) mixes every input bit into every
// output bit.
func rank(name, loser string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(loser))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
