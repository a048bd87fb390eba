package agent

import (
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
