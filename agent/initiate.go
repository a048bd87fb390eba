package agent

import (
	"bytes"
	"time"

	"github.com/weftnet/weft/tunnel"
)

// initiationDelay is how long the newer member of a new pair holds back
// its first handshake (its persistent keepalive) while the older member's
// may be on its way.
//
// Two members learn of each other from the same gossip, so both used to
// configure the other as a peer, and so send a handshake initiation, within
// a millisecond. The two handshakes then cross: each side answers the
// other's initiation, which overwrites the state of its own, and the lab
// caught wireguard-go ending up with a session that one side used and the
// other did not accept, until WireGuard's own timer (no reply 15 s after
// sending data) started a new handshake: pods on those two nodes could not
// reach each other for those seconds. Firezone fixed the same collision by
// letting only one side initiate (firezone/firezone#8169). Here one side
// goes at once and the other after the delay, unless a handshake arrived
// first.
//
// The side that goes at once is the older claim (the earlier lease time,
// then the lower key). A newcomer knows every member from its join, so it
// configures them all before they learn its lease; its own initiations
// are dropped (they do not know its key yet), and each older member's,
// sent the moment it learns the lease, finds it ready. With the key alone
// deciding, half the pairs waited out the delay: the older member held
// back, the newcomer's initiation was gone, and a newcomer of a 25-member
// mesh had its last handshake ~0.5 s later (BenchmarkMesh25).
const initiationDelay = 500 * time.Millisecond

// claim orders the two members of a pair: the one with the earlier lease
// time, then the lower public key, initiates first.
type claim struct {
	leaseTime int64
	key       tunnel.Key
}

// newer reports whether c is the later claim of the pair c, o.
func (c claim) newer(o claim) bool {
	if c.leaseTime != o.leaseTime {
		return c.leaseTime > o.leaseTime
	}
	return bytes.Compare(c.key[:], o.key[:]) > 0
}

// holdInitiations turns off the persistent keepalive (which sends the first
// handshake) of every peer that self must not initiate to yet: peers whose
// claim is older than self's (leaseTimes has their lease times; a peer
// missing there counts as time 0) that have no handshake and were first
// wanted less than initiationDelay ago. since records when each peer was
// first wanted and forgets peers no longer wanted. It returns when the
// earliest hold ends (zero if none is held).
func holdInitiations(self claim, peers []tunnel.Peer, leaseTimes map[tunnel.Key]int64, shaken map[tunnel.Key]bool, since map[tunnel.Key]time.Time, now time.Time) (recheck time.Time) {
	wanted := make(map[tunnel.Key]bool, len(peers))
	for i := range peers {
		p := &peers[i]
		wanted[p.PublicKey] = true
		first, ok := since[p.PublicKey]
		if !ok {
			first = now
			since[p.PublicKey] = now
		}
		if p.PersistentKeepalive <= 0 || shaken[p.PublicKey] || !self.newer(claim{leaseTimes[p.PublicKey], p.PublicKey}) {
			continue
		}
		end := first.Add(initiationDelay)
		if !now.Before(end) {
			continue
		}
		p.PersistentKeepalive = 0
		if recheck.IsZero() || end.Before(recheck) {
			recheck = end
		}
	}
	for k := range since {
		if !wanted[k] {
			delete(since, k)
		}
	}
	return recheck
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
