package membership

import (
	"testing"

	"github.com/hashicorp/memberlist"

	"github.com/weftnet/weft/agent/plan"
)

// setSerfTags tells a timed-out broadcast from other failures by knowing
// that plan.Tags.Encode refuses what Serf would: the two limits must agree.
func TestMaxTagsSizeIsMemberlists(t *testing.T) {
	if plan.MaxTagsSize != memberlist.MetaMaxSize {
		t.Fatalf("plan.MaxTagsSize is %d, memberlist.MetaMaxSize %d", plan.MaxTagsSize, memberlist.MetaMaxSize)
	}
}
