package agent

import (
	"net/netip"
	"time"

	"github.com/weftnet/weft/agent/plan"
	"github.com/weftnet/weft/tunnel"
)

// Fixtures of the agent's tests, as package plan's tests have them: a
// member with valid tags and a block, and the times of its claims.

var (
	leaseT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	// claimEarly and claimLate are claim times before leaseT0, in Unix milliseconds.
	claimEarly = leaseT0.Add(-2 * time.Hour).UnixMilli()
	claimLate  = leaseT0.Add(-1 * time.Hour).UnixMilli()
)

// fakeKey is a deterministic public key whose bytes start with b.
func fakeKey(b byte) tunnel.Key {
	var k tunnel.Key
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func sampleHostTags() plan.Tags {
	return plan.Tags{
		Version:   plan.TagVersion,
		PublicKey: fakeKey(1),
		Endpoint:  netip.MustParseAddrPort("198.18.0.1:51820"),
		Block:     netip.MustParsePrefix("100.64.3.0/24"),
		LeaseTime: 1767225600123,
		Mode:      "kernel",
		MTU:       1420,
	}
}

// leaseMember is an alive member with valid tags claiming block (if not "")
// since lt.
func leaseMember(name, block string, lt int64) plan.Member {
	tags := sampleHostTags()
	tags.PublicKey = fakeKey(byte(len(name)) + name[len(name)-1])
	tags.Block, tags.LeaseTime = netip.Prefix{}, 0
	if block != "" {
		tags.Block, tags.LeaseTime = netip.MustParsePrefix(block), lt
	}
	return plan.Member{Name: name, Status: plan.StatusAlive, Since: leaseT0.Add(-3 * time.Hour), Tags: tags}
}

func asFailed(m plan.Member, ago time.Duration) plan.Member {
	m.Status, m.Since = plan.StatusFailed, leaseT0.Add(-ago)
	return m
}
