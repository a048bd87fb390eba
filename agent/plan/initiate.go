package plan

import (
	"bytes"
	"time"

	"github.com/weftnet/weft/tunnel/wgspec"
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

// Claim orders the two members of a pair: the one with the earlier lease
// time, then the lower public key, initiates first.
type Claim struct {
	LeaseTime int64
	Key       wgspec.Key
}

// newer reports whether c is the later claim of the pair c, o.
func (c Claim) newer(o Claim) bool {
	if c.LeaseTime != o.LeaseTime {
		return c.LeaseTime > o.LeaseTime
	}
	return bytes.Compare(c.Key[:], o.Key[:]) > 0
}

// HoldInitiations turns off the persistent keepalive (which sends the first
// handshake) of every peer that self must not initiate to yet: peers whose
// claim is older than self's (leaseTimes has their lease times; a peer
// missing there counts as time 0) that have no handshake and were first
// wanted less than initiationDelay ago. since records when each peer was
// first wanted and forgets peers no longer wanted. It returns when the
// earliest hold ends (zero if none is held).
func HoldInitiations(self Claim, peers []wgspec.Peer, leaseTimes map[wgspec.Key]int64, shaken map[wgspec.Key]bool, since map[wgspec.Key]time.Time, now time.Time) (recheck time.Time) {
	wanted := make(map[wgspec.Key]bool, len(peers))
	for i := range peers {
		p := &peers[i]
		wanted[p.PublicKey] = true
		first, ok := since[p.PublicKey]
		if !ok {
			first = now
			since[p.PublicKey] = now
		}
		if p.PersistentKeepalive <= 0 || shaken[p.PublicKey] || !self.newer(Claim{leaseTimes[p.PublicKey], p.PublicKey}) {
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
