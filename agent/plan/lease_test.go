package plan

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	leaseT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	// claimEarly and claimLate are claim times before leaseT0, in Unix milliseconds.
	claimEarly = leaseT0.Add(-2 * time.Hour).UnixMilli()
	claimLate  = leaseT0.Add(-1 * time.Hour).UnixMilli()
)

func hostLeasePool() LeaseConfig {
	return LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/16"), BlockBits: 24, TTL: 10 * time.Minute}
}

func sidecarLeasePool() LeaseConfig {
	return LeaseConfig{Range: netip.MustParsePrefix("100.127.0.0/24"), BlockBits: 32, TTL: 10 * time.Minute}
}

// leaseMember is an alive member with valid tags claiming block (if not "")
// since lt.
func leaseMember(name, block string, lt int64) Member {
	tags := sampleHostTags()
	tags.PublicKey = fakeKey(byte(len(name)) + name[len(name)-1])
	tags.Block, tags.LeaseTime = netip.Prefix{}, 0
	if block != "" {
		tags.Block, tags.LeaseTime = netip.MustParsePrefix(block), lt
	}
	return Member{Name: name, Status: StatusAlive, Since: leaseT0.Add(-3 * time.Hour), Tags: tags}
}

func asFailed(m Member, ago time.Duration) Member {
	m.Status, m.Since = StatusFailed, leaseT0.Add(-ago)
	return m
}

func asLeft(m Member) Member {
	m.Status, m.Since = StatusLeft, leaseT0
	return m
}

func withBadTags(m Member) Member {
	m.TagsErr = errors.New("tag mtu: missing")
	return m
}

func TestLeaseConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		c    LeaseConfig
		ok   bool
	}{
		{"host", hostLeasePool(), true},
		{"sidecar", sidecarLeasePool(), true},
		{"whole range one block", LeaseConfig{netip.MustParsePrefix("10.0.0.0/24"), 24, time.Second}, true},
		{"ipv6", LeaseConfig{netip.MustParsePrefix("fd00::/48"), 64, time.Minute}, true},
		{"2^20 blocks", LeaseConfig{netip.MustParsePrefix("10.0.0.0/8"), 28, time.Minute}, true},
		{"2^21 blocks", LeaseConfig{netip.MustParsePrefix("10.0.0.0/8"), 29, time.Minute}, false},
		{"zero range", LeaseConfig{BlockBits: 24, TTL: time.Minute}, false},
		{"unmasked range", LeaseConfig{netip.MustParsePrefix("100.64.1.0/16"), 24, time.Minute}, false},
		{"mapped range", LeaseConfig{netip.MustParsePrefix("::ffff:100.64.0.0/112"), 120, time.Minute}, false},
		{"block shorter than range", LeaseConfig{netip.MustParsePrefix("100.64.0.0/16"), 15, time.Minute}, false},
		{"block longer than address", LeaseConfig{netip.MustParsePrefix("100.64.0.0/16"), 33, time.Minute}, false},
		{"ttl zero", LeaseConfig{netip.MustParsePrefix("100.64.0.0/16"), 24, 0}, false},
		{"ttl negative", LeaseConfig{netip.MustParsePrefix("100.64.0.0/16"), 24, -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.c.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate(%+v) = %v, want ok %v", tt.c, err, tt.ok)
			}
		})
	}
}

func TestLeaseConfigBlock(t *testing.T) {
	tests := []struct {
		c    LeaseConfig
		i    int
		want string
	}{
		{hostLeasePool(), 0, "100.64.0.0/24"},
		{hostLeasePool(), 83, "100.64.83.0/24"},
		{hostLeasePool(), 255, "100.64.255.0/24"},
		{sidecarLeasePool(), 49, "100.127.0.49/32"},
		{LeaseConfig{Range: netip.MustParsePrefix("10.0.0.0/8"), BlockBits: 28}, 1<<20 - 1, "10.255.255.240/28"},
		{LeaseConfig{Range: netip.MustParsePrefix("fd00::/48"), BlockBits: 64}, 0x1234, "fd00:0:0:1234::/64"},
		{LeaseConfig{Range: netip.MustParsePrefix("fd00::/108"), BlockBits: 128}, 0xfffff, "fd00::f:ffff/128"},
	}
	for _, tt := range tests {
		if got := tt.c.block(tt.i); got != netip.MustParsePrefix(tt.want) {
			t.Errorf("%s /%d block %d = %s, want %s", tt.c.Range, tt.c.BlockBits, tt.i, got, tt.want)
		}
	}
}

func TestClaimBlock(t *testing.T) {
	// FNV-1a 64 of the name, mod 256, picks the first block tried:
	// node-a starts at 100.64.83.0/24, node-b at 100.64.6.0/24.
	const startA, startA1 = "100.64.83.0/24", "100.64.84.0/24"
	full := func(c LeaseConfig, except ...int) []Member {
		var ms []Member
		for i := range c.blocks() {
			if !slices.Contains(except, i) {
				ms = append(ms, leaseMember("holder-"+c.block(i).Addr().String(), c.block(i).String(), claimEarly))
			}
		}
		return ms
	}
	tests := []struct {
		name    string
		c       LeaseConfig
		self    string
		members []Member
		want    string
		wantErr error
	}{
		{"empty pool", hostLeasePool(), "node-a", nil, startA, nil},
		{"hash start differs by name", hostLeasePool(), "node-b", nil, "100.64.6.0/24", nil},
		{"skips a taken block", hostLeasePool(), "node-a", []Member{leaseMember("x", startA, claimEarly)}, startA1, nil},
		{"skips a conflict loser's block too", hostLeasePool(), "node-a", []Member{leaseMember("x", startA1, claimEarly), leaseMember("y", startA, claimLate), leaseMember("z", startA, claimEarly)}, "100.64.85.0/24", nil},
		{"left frees at once", hostLeasePool(), "node-a", []Member{asLeft(leaseMember("x", startA, claimEarly))}, startA, nil},
		{"failed holds within TTL", hostLeasePool(), "node-a", []Member{asFailed(leaseMember("x", startA, claimEarly), 10*time.Minute-time.Millisecond)}, startA1, nil},
		{"failed frees at TTL", hostLeasePool(), "node-a", []Member{asFailed(leaseMember("x", startA, claimEarly), 10*time.Minute)}, startA, nil},
		{"bad tags ignored", hostLeasePool(), "node-a", []Member{withBadTags(leaseMember("x", startA, claimEarly))}, startA, nil},
		{"own claim is not taken", hostLeasePool(), "node-a", []Member{leaseMember("node-a", startA, claimEarly)}, startA, nil},
		{"own lost claim stays taken", hostLeasePool(), "node-a", []Member{leaseMember("node-a", startA, claimLate), leaseMember("x", startA, claimEarly)}, startA1, nil},
		{"wraps around", hostLeasePool(), "node-a", full(hostLeasePool(), 2), "100.64.2.0/24", nil},
		{"pool full", hostLeasePool(), "node-a", full(hostLeasePool()), "", ErrNoFreeBlock},
		{"sidecar pool", sidecarLeasePool(), "sc-1", nil, "100.127.0.49/32", nil},
		{"sidecar pool skips taken", sidecarLeasePool(), "sc-1", []Member{leaseMember("sc-2", "100.127.0.49/32", claimEarly)}, "100.127.0.50/32", nil},
		{"sidecar pool full", sidecarLeasePool(), "sc-1", full(sidecarLeasePool()), "", ErrNoFreeBlock},
		{"sidecar pool last free", sidecarLeasePool(), "sc-1", full(sidecarLeasePool(), 0), "100.127.0.0/32", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ClaimBlock(tt.c, tt.self, tt.members, leaseT0)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ClaimBlock = %v, %v; want error %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != netip.MustParsePrefix(tt.want) {
				t.Fatalf("ClaimBlock = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestClaimBlockInvalidPool(t *testing.T) {
	c := hostLeasePool()
	c.TTL = 0
	if _, err := ClaimBlock(c, "node-a", nil, leaseT0); err == nil || errors.Is(err, ErrNoFreeBlock) {
		t.Errorf("ClaimBlock with TTL 0: err = %v, want a config error", err)
	}
}

func TestResolveLeases(t *testing.T) {
	const blk, blk2 = "100.64.1.0/24", "100.64.2.0/24"
	tests := []struct {
		name      string
		members   []Member
		owners    map[string]string // block -> owner
		conflicts []Conflict
	}{
		{"sole claimant owns", []Member{leaseMember("a", blk, claimLate), leaseMember("b", "", 0)}, map[string]string{blk: "a"}, nil},
		{"earlier lt wins", []Member{leaseMember("a", blk, claimLate), leaseMember("b", blk, claimEarly)}, map[string]string{blk: "b"},
			[]Conflict{{netip.MustParsePrefix(blk), "b", "a"}}},
		{"tie on lt: lower name wins", []Member{leaseMember("b", blk, claimEarly), leaseMember("a", blk, claimEarly)}, map[string]string{blk: "a"},
			[]Conflict{{netip.MustParsePrefix(blk), "a", "b"}}},
		{"three claims sorted by claim order", []Member{leaseMember("c", blk, claimEarly), leaseMember("a", blk, claimLate), leaseMember("b", blk, claimEarly), leaseMember("d", blk2, claimLate)},
			map[string]string{blk: "b", blk2: "d"},
			[]Conflict{{netip.MustParsePrefix(blk), "b", "c"}, {netip.MustParsePrefix(blk), "b", "a"}}},
		{"left claim void", []Member{asLeft(leaseMember("a", blk, claimEarly)), leaseMember("b", blk, claimLate)}, map[string]string{blk: "b"}, nil},
		{"left sole claim void", []Member{asLeft(leaseMember("a", blk, claimEarly))}, map[string]string{}, nil},
		{"failed within TTL still wins", []Member{asFailed(leaseMember("a", blk, claimEarly), 5*time.Minute), leaseMember("b", blk, claimLate)}, map[string]string{blk: "a"},
			[]Conflict{{netip.MustParsePrefix(blk), "a", "b"}}},
		{"failed past TTL void", []Member{asFailed(leaseMember("a", blk, claimEarly), 11*time.Minute), leaseMember("b", blk, claimLate)}, map[string]string{blk: "b"}, nil},
		{"unknown status void", []Member{{Name: "a", Status: Status(7), Tags: leaseMember("a", blk, claimEarly).Tags}}, map[string]string{}, nil},
		{"bad tags ignored", []Member{withBadTags(leaseMember("a", blk, claimEarly)), leaseMember("b", blk, claimLate)}, map[string]string{blk: "b"}, nil},
		{"outside range ignored", []Member{leaseMember("a", "100.65.1.0/24", claimEarly)}, map[string]string{}, nil},
		{"wrong size ignored", []Member{leaseMember("a", "100.64.1.0/25", claimEarly), leaseMember("b", "100.64.0.0/23", claimEarly)}, map[string]string{}, nil},
		{"whole range ignored", []Member{leaseMember("a", "100.64.0.0/16", claimEarly)}, map[string]string{}, nil},
		{"other family ignored", []Member{leaseMember("a", "fd00::/24", claimEarly)}, map[string]string{}, nil},
		{"repeated name: first entry counts", []Member{leaseMember("a", blk, claimLate), leaseMember("a", blk2, claimEarly), leaseMember("b", blk, claimEarly)},
			map[string]string{blk: "b"}, []Conflict{{netip.MustParsePrefix(blk), "b", "a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := ResolveLeases(hostLeasePool(), tt.members, leaseT0)
			got := map[string]string{}
			for _, o := range l.Owners {
				got[o.Block.String()] = o.Owner
				if owner, ok := l.Owner(o.Block); !ok || owner != o.Owner {
					t.Errorf("Owner(%s) = %q, %v; want %q", o.Block, owner, ok, o.Owner)
				}
				if b, ok := l.OwnedBlock(o.Owner); !ok || b != o.Block {
					t.Errorf("OwnedBlock(%s) = %s, %v; want %s", o.Owner, b, ok, o.Block)
				}
			}
			if diff := cmp.Diff(tt.owners, got); diff != "" {
				t.Errorf("owners (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.conflicts, l.Conflicts, netipComparers); diff != "" {
				t.Errorf("conflicts (-want +got):\n%s", diff)
			}
			for _, cf := range tt.conflicts {
				if got, ok := l.LostConflict(cf.Loser); !ok || got != cf {
					t.Errorf("LostConflict(%s) = %+v, %v; want %+v", cf.Loser, got, ok, cf)
				}
				if b, ok := l.OwnedBlock(cf.Loser); ok {
					t.Errorf("loser %s owns %s", cf.Loser, b)
				}
			}
		})
	}
}

// TestResolveLeasesOrderFree checks that every member computes the same
// answer whatever order its member list is in.
func TestResolveLeasesOrderFree(t *testing.T) {
	var ms []Member
	for i := range 40 {
		name := string(rune('a'+i%26)) + string(rune('0'+i/26))
		blk := hostLeasePool().block(i % 7).String()
		m := leaseMember(name, blk, claimEarly+int64(i%3))
		switch i % 5 {
		case 3:
			m = asFailed(m, time.Duration(i)*time.Minute/2)
		case 4:
			m = asLeft(m)
		}
		ms = append(ms, m)
	}
	want := ResolveLeases(hostLeasePool(), ms, leaseT0)
	if len(want.Conflicts) == 0 {
		t.Fatal("test setup: no conflicts")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		r.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		got := ResolveLeases(hostLeasePool(), ms, leaseT0)
		if diff := cmp.Diff(want.Owners, got.Owners, netipComparers); diff != "" {
			t.Fatalf("owners depend on member order (-first +shuffled):\n%s", diff)
		}
		if diff := cmp.Diff(want.Conflicts, got.Conflicts, netipComparers); diff != "" {
			t.Fatalf("conflicts depend on member order (-first +shuffled):\n%s", diff)
		}
	}
}

func TestLeasesZeroValue(t *testing.T) {
	var l Leases
	if _, ok := l.Owner(netip.MustParsePrefix("100.64.1.0/24")); ok {
		t.Error("zero Leases has an owner")
	}
	if _, ok := l.OwnedBlock("a"); ok {
		t.Error("zero Leases has an owned block")
	}
	if _, ok := l.LostConflict("a"); ok {
		t.Error("zero Leases has a conflict")
	}
}

func TestNextLease(t *testing.T) {
	const startA = "100.64.83.0/24"
	nowMs := leaseT0.UnixMilli()
	tests := []struct {
		name        string
		c           LeaseConfig
		self        Member
		members     []Member
		wantBlock   string
		wantTime    int64
		wantChanged bool
		wantErr     error
	}{
		{"first claim", hostLeasePool(), leaseMember("node-a", "", 0), nil, startA, nowMs, true, nil},
		{"first claim, self listed", hostLeasePool(), leaseMember("node-a", "", 0), []Member{leaseMember("node-a", "", 0)}, startA, nowMs, true, nil},
		{"keeps its block", hostLeasePool(), leaseMember("node-a", "100.64.9.0/24", claimLate), []Member{leaseMember("b", "100.64.10.0/24", claimEarly)}, "100.64.9.0/24", claimLate, false, nil},
		{"keeps its block, self listed with stale tags", hostLeasePool(), leaseMember("node-a", "100.64.9.0/24", claimLate),
			[]Member{leaseMember("node-a", "", 0), leaseMember("b", "100.64.10.0/24", claimEarly)}, "100.64.9.0/24", claimLate, false, nil},
		{"self listed as failed still counts as alive", hostLeasePool(), asFailed(leaseMember("node-a", "100.64.9.0/24", claimLate), time.Hour), nil, "100.64.9.0/24", claimLate, false, nil},
		{"wins a conflict and keeps", hostLeasePool(), leaseMember("node-a", startA, claimEarly), []Member{leaseMember("b", startA, claimLate)}, startA, claimEarly, false, nil},
		{"loses a conflict and re-leases elsewhere", hostLeasePool(), leaseMember("node-a", startA, claimLate), []Member{leaseMember("b", startA, claimEarly)}, "100.64.84.0/24", nowMs, true, nil},
		{"loses a tie on name", hostLeasePool(), leaseMember("node-a", startA, claimEarly), []Member{leaseMember("node-0", startA, claimEarly)}, "100.64.84.0/24", nowMs, true, nil},
		{"block outside the pool", hostLeasePool(), leaseMember("node-a", "10.0.0.0/24", claimEarly), nil, startA, nowMs, true, nil},
		{"block of the wrong size", sidecarLeasePool(), leaseMember("sc-1", "100.127.0.0/24", claimEarly), nil, "100.127.0.49/32", nowMs, true, nil},
		{"takes a left member's block", hostLeasePool(), leaseMember("node-a", "", 0), []Member{asLeft(leaseMember("b", startA, claimEarly))}, startA, nowMs, true, nil},
		{"does not take a failed member's block", hostLeasePool(), leaseMember("node-a", "", 0), []Member{asFailed(leaseMember("b", startA, claimEarly), time.Minute)}, "100.64.84.0/24", nowMs, true, nil},
		{"pool full", LeaseConfig{netip.MustParsePrefix("100.64.0.0/24"), 24, time.Minute}, leaseMember("node-a", "", 0), []Member{leaseMember("b", "100.64.0.0/24", claimLate)}, "", 0, false, ErrNoFreeBlock},
		{"lost and pool full", LeaseConfig{netip.MustParsePrefix("100.64.0.0/24"), 24, time.Minute}, leaseMember("node-a", "100.64.0.0/24", claimLate), []Member{leaseMember("b", "100.64.0.0/24", claimEarly)}, "", 0, false, ErrNoFreeBlock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			block, lt, changed, err := NextLease(tt.c, tt.self, tt.members, leaseT0)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("NextLease = %v, %d, %v, %v; want error %v", block, lt, changed, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if block != netip.MustParsePrefix(tt.wantBlock) || lt != tt.wantTime || changed != tt.wantChanged {
				t.Errorf("NextLease = %v, %d, %v; want %s, %d, %v", block, lt, changed, tt.wantBlock, tt.wantTime, tt.wantChanged)
			}
		})
	}
}

func TestNextLeaseInvalid(t *testing.T) {
	c := hostLeasePool()
	c.BlockBits = 8
	if _, _, _, err := NextLease(c, leaseMember("a", "", 0), nil, leaseT0); err == nil {
		t.Error("NextLease with /8 blocks in a /16 succeeded")
	}
	if _, _, _, err := NextLease(hostLeasePool(), leaseMember("a", "", 0), nil, time.Unix(-1, 0)); err == nil {
		t.Error("NextLease before 1970 succeeded")
	}
}

// TestLoserReleases plays a conflict to the end: after the loser moves,
// both hold distinct blocks and nobody re-leases again.
func TestLoserReleases(t *testing.T) {
	const blk = "100.64.83.0/24"
	a, b := leaseMember("node-a", blk, claimLate), leaseMember("node-b", blk, claimEarly)
	block, lt, changed, err := NextLease(hostLeasePool(), a, []Member{a, b}, leaseT0)
	if err != nil || !changed || block == netip.MustParsePrefix(blk) {
		t.Fatalf("loser: NextLease = %v, %v, %v; want a new block", block, changed, err)
	}
	a.Tags.Block, a.Tags.LeaseTime = block, lt
	l := ResolveLeases(hostLeasePool(), []Member{a, b}, leaseT0)
	if len(l.Conflicts) != 0 {
		t.Errorf("conflicts after the loser moved: %+v", l.Conflicts)
	}
	for _, m := range []Member{a, b} {
		if _, _, changed, err := NextLease(hostLeasePool(), m, []Member{a, b}, leaseT0); changed || err != nil {
			t.Errorf("%s moves again: changed %v, err %v", m.Name, changed, err)
		}
	}
}
