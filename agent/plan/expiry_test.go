package plan

import (
	"testing"
	"time"
)

// FirstExpiry is the earliest TTL end still ahead among failed members
// that hold a block: the moment an agent waiting for a full pool retries.
func TestFirstExpiry(t *testing.T) {
	ttl := 10 * time.Minute
	ms := []Member{
		leaseMember("alive", "100.64.1.0/24", claimEarly),
		asFailed(leaseMember("old", "100.64.2.0/24", claimEarly), 9*time.Minute),
		asFailed(leaseMember("recent", "100.64.3.0/24", claimEarly), time.Minute),
		asFailed(leaseMember("expired", "100.64.4.0/24", claimEarly), 11*time.Minute),
		asFailed(Member{Name: "no-block", Tags: Tags{Version: TagVersion}}, 9*time.Minute+30*time.Second),
	}
	if got, want := FirstExpiry(ms, ttl, leaseT0), leaseT0.Add(time.Minute); !got.Equal(want) {
		t.Errorf("first expiry %v, want %v (old's TTL end)", got, want)
	}
	if got := FirstExpiry(ms[:1], ttl, leaseT0); !got.IsZero() {
		t.Errorf("no failed member: %v, want zero", got)
	}
}
