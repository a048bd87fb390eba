package plan

import (
	"testing"
	"time"

	"github.com/weftnet/weft/tunnel/wgspec"
)

func keyOf(b byte) wgspec.Key {
	var k wgspec.Key
	k[0] = b
	return k
}

// Of two claims made at the same time, the member with the higher key holds
// its first handshake back for initiationDelay unless a handshake came
// first; the lower key never waits; a peer that goes and comes back waits
// again.
func TestHoldInitiations(t *testing.T) {
	self := Claim{LeaseTime: 100, Key: keyOf(5)}
	lower, higher := keyOf(3), keyOf(7)
	same := map[wgspec.Key]int64{lower: 100, higher: 100}
	t0 := time.Unix(1000, 0)
	want := func() []wgspec.Peer {
		return []wgspec.Peer{
			{PublicKey: lower, PersistentKeepalive: 25 * time.Second},
			{PublicKey: higher, PersistentKeepalive: 25 * time.Second},
		}
	}
	since := map[wgspec.Key]time.Time{}
	keepalives := func(ps []wgspec.Peer) [2]time.Duration {
		return [2]time.Duration{ps[0].PersistentKeepalive, ps[1].PersistentKeepalive}
	}

	ps := want()
	recheck := HoldInitiations(self, ps, same, nil, since, t0)
	if got := keepalives(ps); got != [2]time.Duration{0, 25 * time.Second} {
		t.Fatalf("at first sight: keepalives %v, want the lower-key peer held (0) and the higher-key one at once", got)
	}
	if !recheck.Equal(t0.Add(initiationDelay)) {
		t.Fatalf("recheck %v, want %v", recheck, t0.Add(initiationDelay))
	}

	ps = want()
	recheck = HoldInitiations(self, ps, same, nil, since, t0.Add(initiationDelay/2))
	if got := keepalives(ps); got[0] != 0 || !recheck.Equal(t0.Add(initiationDelay)) {
		t.Fatalf("half way: keepalives %v recheck %v, want still held until %v", got, recheck, t0.Add(initiationDelay))
	}

	ps = want()
	recheck = HoldInitiations(self, ps, same, map[wgspec.Key]bool{lower: true}, since, t0.Add(initiationDelay/2))
	if got := keepalives(ps); got[0] != 25*time.Second || !recheck.IsZero() {
		t.Fatalf("after the peer's handshake: keepalives %v recheck %v, want no hold", got, recheck)
	}

	ps = want()
	recheck = HoldInitiations(self, ps, same, nil, since, t0.Add(initiationDelay))
	if got := keepalives(ps); got[0] != 25*time.Second || !recheck.IsZero() {
		t.Fatalf("after the delay: keepalives %v recheck %v, want no hold", got, recheck)
	}

	// The lower-key peer leaves, then comes back: a new pair, a new hold.
	HoldInitiations(self, want()[1:], same, nil, since, t0.Add(2*initiationDelay))
	if _, ok := since[lower]; ok {
		t.Fatal("a peer no longer wanted is still remembered")
	}
	ps = want()
	t1 := t0.Add(3 * initiationDelay)
	recheck = HoldInitiations(self, ps, same, nil, since, t1)
	if got := keepalives(ps); got[0] != 0 || !recheck.Equal(t1.Add(initiationDelay)) {
		t.Fatalf("back again: keepalives %v recheck %v, want held until %v", got, recheck, t1.Add(initiationDelay))
	}

	// Keepalive off by configuration: nothing to hold, nothing to recheck.
	ps = []wgspec.Peer{{PublicKey: keyOf(1)}}
	if recheck := HoldInitiations(self, ps, same, nil, map[wgspec.Key]time.Time{}, t0); !recheck.IsZero() || ps[0].PersistentKeepalive != 0 {
		t.Fatalf("keepalive off: recheck %v keepalive %v", recheck, ps[0].PersistentKeepalive)
	}
}

// The older claim goes first whatever the keys: a newcomer (the latest
// lease) holds back from every member, and an old member initiates to it
// at once.
func TestHoldInitiationsOlderClaimFirst(t *testing.T) {
	self := Claim{LeaseTime: 200, Key: keyOf(5)}
	older, newer, unknown := keyOf(7), keyOf(3), keyOf(9)
	leaseTimes := map[wgspec.Key]int64{older: 100, newer: 300}
	ps := []wgspec.Peer{
		{PublicKey: older, PersistentKeepalive: 25 * time.Second},
		{PublicKey: newer, PersistentKeepalive: 25 * time.Second},
		{PublicKey: unknown, PersistentKeepalive: 25 * time.Second},
	}
	t0 := time.Unix(1000, 0)
	recheck := HoldInitiations(self, ps, leaseTimes, nil, map[wgspec.Key]time.Time{}, t0)
	got := [3]time.Duration{ps[0].PersistentKeepalive, ps[1].PersistentKeepalive, ps[2].PersistentKeepalive}
	// The peer without a lease time counts as the oldest claim (time 0).
	if want := [3]time.Duration{0, 25 * time.Second, 0}; got != want {
		t.Fatalf("keepalives %v, want %v: held for the older claims (higher key and unknown), at once to the newer (lower key)", got, want)
	}
	if !recheck.Equal(t0.Add(initiationDelay)) {
		t.Fatalf("recheck %v, want %v", recheck, t0.Add(initiationDelay))
	}
}
