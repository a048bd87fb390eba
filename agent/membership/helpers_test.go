package membership

import (
	"testing"
	"time"

	"github.com/weftnet/weft/agent/plan/plantest"
)

// The fixtures of package plan's tests (agent/plan/plantest), under the
// names those tests use.
var (
	leaseT0        = plantest.T0
	claimEarly     = plantest.ClaimEarly
	claimLate      = plantest.ClaimLate
	fakeKey        = plantest.FakeKey
	sampleHostTags = plantest.SampleHostTags
	leaseMember    = plantest.LeaseMember
	asFailed       = plantest.AsFailed
)

// waitUntil polls cond until it returns nil, failing t after d.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < d {
		if err = cond(); err == nil {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, d, err)
	return 0
}
