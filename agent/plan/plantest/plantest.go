// Package plantest holds the fixtures that the tests of the packages built
// on agent/plan share: members with valid tags and blocks, and the times of
// their claims. Only tests import it; it is not linked into the weft binary.
package plantest

import (
	"net/netip"
	"time"

	"github.com/weftnet/weft/agent/plan"
	"github.com/weftnet/weft/tunnel/wgspec"
)

var (
	// T0 is the fixtures' "now".
	T0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	// ClaimEarly and ClaimLate are claim times before T0, in Unix milliseconds.
	ClaimEarly = T0.Add(-2 * time.Hour).UnixMilli()
	ClaimLate  = T0.Add(-1 * time.Hour).UnixMilli()
)

// FakeKey is a deterministic public key whose bytes start with b.
func FakeKey(b byte) wgspec.Key {
	var k wgspec.Key
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

// SampleHostTags are valid tags of a host-mode member holding a block.
func SampleHostTags() plan.Tags {
	return plan.Tags{
		Version:   plan.TagVersion,
		PublicKey: FakeKey(1),
		Endpoint:  netip.MustParseAddrPort("198.18.0.1:51820"),
		Block:     netip.MustParsePrefix("100.64.3.0/24"),
		LeaseTime: 1767225600123,
		Mode:      "kernel",
		MTU:       1420,
	}
}

// LeaseMember is an alive member with valid tags claiming block (if not "")
// since lt.
func LeaseMember(name, block string, lt int64) plan.Member {
	tags := SampleHostTags()
	tags.PublicKey = FakeKey(byte(len(name)) + name[len(name)-1])
	tags.Block, tags.LeaseTime = netip.Prefix{}, 0
	if block != "" {
		tags.Block, tags.LeaseTime = netip.MustParsePrefix(block), lt
	}
	return plan.Member{Name: name, Status: plan.StatusAlive, Since: T0.Add(-3 * time.Hour), Tags: tags}
}

// AsFailed is m seen as failed since ago before T0.
func AsFailed(m plan.Member, ago time.Duration) plan.Member {
	m.Status, m.Since = plan.StatusFailed, T0.Add(-ago)
	return m
}
