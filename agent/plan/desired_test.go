package plan

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/tunnel/wgspec"
)

// wantPeer is the peer Desired makes of member m.
func wantPeer(m Member) wgspec.Peer {
	return wgspec.Peer{PublicKey: m.Tags.PublicKey, Endpoint: m.Tags.Endpoint, AllowedIPs: []netip.Prefix{m.Tags.Block}}
}

func withKey(m Member, k wgspec.Key) Member {
	m.Tags.PublicKey = k
	return m
}

func TestDesired(t *testing.T) {
	self := leaseMember("self", "100.64.0.0/24", claimEarly)
	a := leaseMember("a", "100.64.1.0/24", claimEarly)
	b := leaseMember("b", "100.64.2.0/24", claimEarly)
	c := leaseMember("c", "100.64.3.0/24", claimEarly)
	blk := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }

	tests := []struct {
		name    string
		members []Member
		want    DesiredState
	}{
		{
			name:    "self excluded",
			members: []Member{self},
			want:    DesiredState{},
		},
		{
			name:    "alive members, sorted by name and block",
			members: []Member{c, self, leaseMember("b", "100.64.0.128/25", claimEarly), a, leaseMember("z", "100.64.200.0/24", claimEarly), leaseMember("y", "100.64.9.0/24", claimEarly)},
			want: DesiredState{
				Peers: []wgspec.Peer{
					wantPeer(a), wantPeer(c),
					wantPeer(leaseMember("y", "100.64.9.0/24", claimEarly)),
					wantPeer(leaseMember("z", "100.64.200.0/24", claimEarly)),
				},
				Routes:  []netip.Prefix{blk("100.64.1.0/24"), blk("100.64.3.0/24"), blk("100.64.9.0/24"), blk("100.64.200.0/24")},
				Skipped: []Skip{{Name: "b", Reason: SkipNoLease}},
			},
		},
		{
			name:    "left member gone",
			members: []Member{self, a, asLeft(b)},
			want:    DesiredState{Peers: []wgspec.Peer{wantPeer(a)}, Routes: []netip.Prefix{a.Tags.Block}},
		},
		{
			name:    "failed member kept within TTL",
			members: []Member{self, asFailed(a, 9*time.Minute)},
			want:    DesiredState{Peers: []wgspec.Peer{wantPeer(a)}, Routes: []netip.Prefix{a.Tags.Block}},
		},
		{
			name:    "failed member gone after TTL",
			members: []Member{self, asFailed(a, 10*time.Minute), b},
			want:    DesiredState{Peers: []wgspec.Peer{wantPeer(b)}, Routes: []netip.Prefix{b.Tags.Block}},
		},
		{
			name:    "conflict loser not routed",
			members: []Member{self, leaseMember("a", "100.64.2.0/24", claimLate), b},
			want: DesiredState{
				Peers:   []wgspec.Peer{wantPeer(b)},
				Routes:  []netip.Prefix{b.Tags.Block},
				Skipped: []Skip{{Name: "a", Reason: SkipLostLease}},
			},
		},
		{
			name:    "winner of self's block routed",
			members: []Member{leaseMember("self", "100.64.2.0/24", claimLate), b},
			want:    DesiredState{Peers: []wgspec.Peer{wantPeer(b)}, Routes: []netip.Prefix{b.Tags.Block}},
		},
		{
			name:    "duplicate key: first by name kept",
			members: []Member{self, withKey(c, fakeKey(99)), withKey(b, fakeKey(99)), a},
			want: DesiredState{
				Peers:   []wgspec.Peer{wantPeer(a), wantPeer(withKey(b, fakeKey(99)))},
				Routes:  []netip.Prefix{a.Tags.Block, b.Tags.Block},
				Skipped: []Skip{{Name: "c", Reason: SkipDuplicateKey}},
			},
		},
		{
			name:    "duplicate key of a member without a lease does not count",
			members: []Member{self, withKey(leaseMember("a", "", 0), fakeKey(99)), withKey(b, fakeKey(99))},
			want: DesiredState{
				Peers:   []wgspec.Peer{wantPeer(withKey(b, fakeKey(99)))},
				Routes:  []netip.Prefix{b.Tags.Block},
				Skipped: []Skip{{Name: "a", Reason: SkipNoLease}},
			},
		},
		{
			name:    "self's key",
			members: []Member{self, withKey(a, self.Tags.PublicKey), b},
			want: DesiredState{
				Peers:   []wgspec.Peer{wantPeer(b)},
				Routes:  []netip.Prefix{b.Tags.Block},
				Skipped: []Skip{{Name: "a", Reason: SkipSelfKey}},
			},
		},
		{
			name:    "malformed tags",
			members: []Member{self, withBadTags(a), b},
			want: DesiredState{
				Peers:   []wgspec.Peer{wantPeer(b)},
				Routes:  []netip.Prefix{b.Tags.Block},
				Skipped: []Skip{{Name: "a", Reason: SkipBadTags}},
			},
		},
		{
			name:    "malformed tags of a left member: gone, not skipped",
			members: []Member{self, asLeft(withBadTags(a))},
			want:    DesiredState{},
		},
		{
			name:    "no block yet",
			members: []Member{self, leaseMember("a", "", 0)},
			want:    DesiredState{Skipped: []Skip{{Name: "a", Reason: SkipNoLease}}},
		},
		{
			name:    "block outside the pool",
			members: []Member{self, leaseMember("a", "10.1.0.0/24", claimEarly)},
			want:    DesiredState{Skipped: []Skip{{Name: "a", Reason: SkipNoLease}}},
		},
		{
			name:    "zero key",
			members: []Member{self, withKey(a, wgspec.Key{})},
			want:    DesiredState{Skipped: []Skip{{Name: "a", Reason: SkipBadTags}}},
		},
		{
			name:    "unknown status gone",
			members: []Member{self, {Name: "a", Status: Status(9), Tags: a.Tags}},
			want:    DesiredState{},
		},
		{
			name:    "repeated name: first entry counts",
			members: []Member{self, a, withBadTags(a)},
			want:    DesiredState{Peers: []wgspec.Peer{wantPeer(a)}, Routes: []netip.Prefix{a.Tags.Block}},
		},
	}
	ignoreDetail := cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Detail" }, cmp.Ignore())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leases := ResolveLeases(hostLeasePool(), tt.members, leaseT0)
			got := Desired("self", tt.members, leases, leaseT0)
			if diff := cmp.Diff(tt.want, got, netipComparers, ignoreDetail); diff != "" {
				t.Errorf("Desired (-want +got):\n%s", diff)
			}
			for _, p := range got.Peers {
				if err := p.Validate(); err != nil {
					t.Errorf("invalid peer: %v", err)
				}
			}
			for _, s := range got.Skipped {
				if s.Detail == "" {
					t.Errorf("skip of %s (%s) has no detail", s.Name, s.Reason)
				}
			}
		})
	}
}

func TestDesiredSkipDetail(t *testing.T) {
	self := leaseMember("self", "100.64.0.0/24", claimEarly)
	members := []Member{
		self,
		leaseMember("a", "100.64.2.0/24", claimLate),
		leaseMember("b", "100.64.2.0/24", claimEarly),
		withKey(leaseMember("c", "100.64.3.0/24", claimEarly), self.Tags.PublicKey),
		withKey(leaseMember("d", "100.64.4.0/24", claimEarly), fakeKey(50)),
		withKey(leaseMember("e", "100.64.5.0/24", claimEarly), fakeKey(50)),
		{Name: "f", Status: StatusAlive, TagsErr: errors.New("tag mtu: missing")},
		leaseMember("g", "10.0.0.0/24", claimEarly),
	}
	got := Desired("self", members, ResolveLeases(hostLeasePool(), members, leaseT0), leaseT0)
	want := map[string][]string{
		"a": {"100.64.2.0/24", "b"},
		"c": {wgspec.Fingerprint(self.Tags.PublicKey)},
		"e": {wgspec.Fingerprint(fakeKey(50)), "d"},
		"f": {"tag mtu: missing"},
		"g": {"10.0.0.0/24", "100.64.0.0/16"},
	}
	if len(got.Skipped) != len(want) {
		t.Fatalf("skipped %+v, want %d", got.Skipped, len(want))
	}
	for _, s := range got.Skipped {
		for _, w := range want[s.Name] {
			if !strings.Contains(s.Detail, w) {
				t.Errorf("skip of %s: detail %q does not name %q", s.Name, s.Detail, w)
			}
		}
	}
}

// TestDesiredOrderFree checks that the answer does not depend on the order
// of the member list.
func TestDesiredOrderFree(t *testing.T) {
	var ms []Member
	for i := range 30 {
		name := string(rune('a'+i%26)) + string(rune('0'+i/26))
		m := leaseMember(name, hostLeasePool().block(i%20).String(), claimEarly+int64(i%4))
		switch i % 6 {
		case 1:
			m = asFailed(m, time.Duration(i)*time.Minute/2)
		case 2:
			m = asLeft(m)
		case 3:
			m = withKey(m, fakeKey(200))
		}
		ms = append(ms, m)
	}
	want := Desired("a0", ms, ResolveLeases(hostLeasePool(), ms, leaseT0), leaseT0)
	if len(want.Peers) == 0 || len(want.Skipped) == 0 {
		t.Fatalf("test setup: %d peers, %d skipped", len(want.Peers), len(want.Skipped))
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		r.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		got := Desired("a0", ms, ResolveLeases(hostLeasePool(), ms, leaseT0), leaseT0)
		if diff := cmp.Diff(want, got, netipComparers); diff != "" {
			t.Fatalf("Desired depends on member order (-first +shuffled):\n%s", diff)
		}
	}
}
