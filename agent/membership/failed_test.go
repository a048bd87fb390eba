package membership

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/plan"
)

func TestParseFailedNotice(t *testing.T) {
	good := []heldLease{{Name: "gone", Block: "100.64.1.0/24", Lt: claimEarly, FailedFor: 1000}, {Name: "gone2", Block: "100.64.2.0/24", Lt: claimLate}}
	enc := func(h ...heldLease) []byte { b, _ := json.Marshal(h); return b }
	got, err := parseFailedNotice(enc(good...), time.Minute)
	if err != nil || len(got) != 2 || got[1].Name != "gone2" {
		t.Fatalf("good notice: %+v %v", got, err)
	}
	// An entry past the hold time is dropped, not the list (the sender's
	// TTL may be longer).
	stale := heldLease{Name: "long-gone", Block: "100.64.3.0/24", FailedFor: (2 * time.Minute).Milliseconds()}
	got, err = parseHeld(enc(good[0], stale), time.Minute)
	if err != nil || len(got) != 1 || got[0].Name != "gone" {
		t.Errorf("notice with a stale entry: %+v %v", got, err)
	}
	bad := map[string][]byte{
		"not json":     []byte("{"),
		"empty":        []byte("[]"),
		"no name":      enc(heldLease{Block: "100.64.1.0/24", FailedFor: 1}),
		"long name":    enc(heldLease{Name: strings.Repeat("n", 200), Block: "100.64.1.0/24"}),
		"negative age": enc(heldLease{Name: "gone", Block: "100.64.1.0/24", FailedFor: -1}),
		"only too old": enc(stale),
		"bad block":    enc(heldLease{Name: "gone", Block: "100.64.1.7/24"}),
		"no block":     enc(heldLease{Name: "gone"}),
		"one bad":      enc(good[0], heldLease{Name: "x", Block: "nope"}),
	}
	for name, b := range bad {
		if _, err := parseFailedNotice(b, time.Minute); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A notice for many held blocks is cut into queries that each fit one
// gossip packet.
func TestHeldLeasesFitBudget(t *testing.T) {
	var held []plan.Member
	for i := 0; i < 40; i++ {
		held = append(held, asFailed(leaseMember(fmt.Sprintf("member-with-a-long-name-%03d", i), fmt.Sprintf("100.64.%d.0/24", i), claimEarly), time.Minute))
	}
	var sizes []int
	send := func(payload []byte) error {
		sizes = append(sizes, len(payload))
		if _, err := parseFailedNotice(payload, time.Hour); err != nil {
			t.Errorf("batch does not parse: %v", err)
		}
		return nil
	}
	if err := batchHeld(held, leaseT0, send); err != nil {
		t.Fatal(err)
	}
	for _, n := range sizes {
		if n > noticeBudget {
			t.Errorf("batch of %d bytes, budget %d", n, noticeBudget)
		}
	}
	if len(sizes) < 2 {
		t.Errorf("40 members in %d batch(es)", len(sizes))
	}
	// A probe ack carries what fits of the list.
	ack, rest, err := packHeld(heldEntries(held, leaseT0), ackBudget)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseHeld(ack, time.Hour)
	if err != nil || len(ack) > ackBudget || len(got) == 0 || len(got)+len(rest) != 40 {
		t.Errorf("ack of %d bytes (budget %d): %d members, %d left over, err %v", len(ack), ackBudget, len(got), len(rest), err)
	}
}

func FuzzParseFailedNotice(f *testing.F) {
	b, _ := json.Marshal([]heldLease{{Name: "gone", Block: "100.64.1.0/24", Lt: 5, FailedFor: 5}})
	f.Add(b)
	f.Add([]byte(`[{"n":"x","b":"::/0","l":1,"f":1}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		held, err := parseFailedNotice(b, time.Hour)
		if err != nil {
			return
		}
		for _, h := range held {
			p, perr := netip.ParsePrefix(h.Block)
			if h.Name == "" || h.FailedFor < 0 || h.FailedFor > time.Hour.Milliseconds() || h.Lt < 0 || perr != nil || p != p.Masked() {
				t.Fatalf("accepted %q as %+v", b, h)
			}
		}
	})
}
