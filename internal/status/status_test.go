package status

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/agent/api"
)

func TestPrint(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	rep := api.Report{
		Ready: true,
		Self: api.SelfReport{Name: "n1", Mode: "tun", Interface: "weft0", Fingerprint: "AbCdEf12",
			Block: "100.64.1.0/24", Address: "100.64.1.1", MTU: 1420, GossipEncrypted: true},
		Members: []api.MemberReport{
			{Name: "n1", State: "alive", Mode: "tun", Endpoint: "198.18.0.1:51820", Block: "100.64.1.0/24", OwnsBlock: true},
			{Name: "n2", State: "alive", Mode: "kernel", Endpoint: "198.18.0.2:51820", Block: "100.64.2.0/24", OwnsBlock: true,
				Peer: &api.PeerReport{LastHandshake: now.Add(-7 * time.Second), RxBytes: 1536, TxBytes: 3 << 30}},
			{Name: "n3", State: "failed", Since: now.Add(-90 * time.Second), Mode: "tun", Endpoint: "198.18.0.3:51820",
				Block: "100.64.3.0/24", OwnsBlock: true, Peer: &api.PeerReport{}},
			{Name: "n4", State: "alive", Mode: "tun", Endpoint: "198.18.0.4:51820", Block: "100.64.1.0/24", OwnsBlock: false},
			{Name: "n5", State: "left", Since: now.Add(-2 * time.Hour), TagsError: "tag v: unknown version 9"},
		},
		Conflicts: []api.ConflictReport{{Block: "100.64.1.0/24", Winner: "n1", Loser: "n4"}},
	}
	var b bytes.Buffer
	Print(&b, rep, now)
	want := `node n1  key AbCdEf12  mode tun  mtu 1420  block 100.64.1.0/24  address 100.64.1.1  gossip encrypted  ready true
NAME  STATE         MODE    ENDPOINT          BLOCK          HANDSHAKE  RX       TX       CONFLICTS                  NOTE
n1    alive         tun     198.18.0.1:51820  100.64.1.0/24  -          -        -        won 100.64.1.0/24 over n4  self
n2    alive         kernel  198.18.0.2:51820  100.64.2.0/24  7s ago     1.5 KiB  3.0 GiB  -
n3    failed 1m30s  tun     198.18.0.3:51820  100.64.3.0/24  never      0 B      0 B      -
n4    alive         tun     198.18.0.4:51820  100.64.1.0/24  -          -        -        lost 100.64.1.0/24 to n1
n5    left 2h00m    -       -                 -              -          -        -        -                          ignored: tag v: unknown version 9
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}

	// Unencrypted gossip and a reconcile error must stand out.
	rep.Self.GossipEncrypted = false
	rep.LastError = "set peers: device gone"
	b.Reset()
	Print(&b, rep, now)
	for _, s := range []string{"gossip NOT ENCRYPTED", "last error: set peers: device gone"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, b.String())
		}
	}
}

func TestAgeAndBytes(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{{-time.Second, "0s"}, {59 * time.Second, "59s"}, {61 * time.Second, "1m01s"}, {25 * time.Hour, "1d1h"}} {
		if got := Age(c.d); got != c.want {
			t.Errorf("Age(%v) = %q, want %q", c.d, got, c.want)
		}
	}
	for _, c := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {5 << 20, "5.0 MiB"}} {
		if got := Bytes(c.n); got != c.want {
			t.Errorf("Bytes(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}
