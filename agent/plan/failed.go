package plan

import (
	"cmp"
	"hash/fnv"
	"slices"
	"strings"
)

// oldestClaims returns the indexes of the alive members with a block,
// oldest claim first (then by name): every member with the same view
// orders them alike.
func oldestClaims(members []Member) []int {
	var old []int
	for i, m := range members {
		if m.Status == StatusAlive && m.TagsErr == nil && m.Tags.Block.IsValid() {
			old = append(old, i)
		}
	}
	slices.SortFunc(old, func(a, b int) int {
		ma, mb := &members[a], &members[b]
		return cmp.Or(cmp.Compare(ma.Tags.LeaseTime, mb.Tags.LeaseTime), strings.Compare(ma.Name, mb.Name))
	})
	return old
}

// noticeSenders is how many of the members that saw a failure tell a
// newcomer about it. One: a notice is a Serf query, which every member
// relays (a FilterNodes query is still gossiped to all), so each extra
// sender multiplies the gossip load; in a 200-member churn, three senders
// retelling every 10 s queued over a minute of queries. Views that differ
// can make two members think they are first; that is fine.
const noticeSenders = 1

// senderPool is how many of the oldest members share the telling.
const senderPool = 16

// FailedWinners returns, for each conflict in which an alive member lost a
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
func FailedWinners(self string, members []Member, leases Leases) []Conflict {
	if len(leases.Conflicts) == 0 {
		return nil
	}
	// Indexes, not copies: in a 1000-member mesh the copies of every
	// member, per conflict, were a tenth of a simulation's live heap.
	byName := make(map[string]int, len(members))
	for i := range members {
		byName[members[i].Name] = i
	}
	var claims []int // built for the first conflict that needs it
	var out []Conflict
	for _, c := range leases.Conflicts {
		wi, wok := byName[c.Winner]
		li, lok := byName[c.Loser]
		if !wok || !lok || members[wi].Status != StatusFailed || members[li].Status != StatusAlive || c.Loser == self {
			continue
		}
		if claims == nil {
			claims = oldestClaims(members)
		}
		// The senderPool oldest claims but the loser's.
		pool := make([]string, 0, senderPool)
		for _, i := range claims {
			if n := members[i].Name; n != c.Loser {
				if pool = append(pool, n); len(pool) == senderPool {
					break
				}
			}
		}
		slices.SortFunc(pool, func(a, b string) int { return cmp.Compare(rank(a, c.Loser), rank(b, c.Loser)) })
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
