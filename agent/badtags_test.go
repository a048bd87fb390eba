package agent

import (
	"fmt"
	"io"
	"log"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"github.com/weftnet/weft/agent/plan"
	"github.com/weftnet/weft/tunnel"
)

// Issue 4: members whose tags are malformed, too large, of an unknown
// version or out of the cluster range are listed but ignored, counted in a
// metric, and never become a peer, a route or a lease holder.
func TestInvalidTagsIgnored(t *testing.T) {
	pool := plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/20"), BlockBits: 24, TTL: time.Minute}
	s := newSim(t, pool)
	good := s.start("good", 0, false)
	kk, _ := tunnel.GeneratePrivateKey()
	k := kk.Public().String()
	bad := map[string]map[string]string{
		"bad-key":     {"v": "1", "pk": "not-a-key", "ep": "127.0.0.1:51820", "m": "tun", "mtu": "1420", "blk": "100.64.1.0/24", "lt": "1"},
		"bad-version": {"v": "9", "pk": k, "ep": "127.0.0.1:51820", "m": "tun", "mtu": "1420"},
		"bad-range":   {"v": "1", "pk": k, "ep": "127.0.0.1:51820", "m": "tun", "mtu": "1420", "blk": "10.0.0.0/24", "lt": "1"},
		"bad-mtu":     {"v": "1", "pk": k, "ep": "127.0.0.1:51820", "m": "tun", "mtu": "99999"},
	}
	for name, tags := range bad {
		sc := serf.DefaultConfig()
		sc.NodeName = name
		sc.Tags = tags
		sc.MemberlistConfig = memberlist.DefaultLocalConfig()
		sc.MemberlistConfig.Name = name
		sc.MemberlistConfig.BindAddr = "127.0.0.1"
		sc.MemberlistConfig.BindPort = 0
		kr, _ := memberlist.NewKeyring(nil, s.key)
		sc.MemberlistConfig.Keyring = kr
		sc.Logger = log.New(io.Discard, "", 0)
		sc.MemberlistConfig.Logger = sc.Logger
		sv, err := serf.Create(sc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sv.Shutdown() })
		if _, err := sv.Join([]string{good.addr}, true); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 30*time.Second, "bad members seen and skipped", func() error {
		good.mu.Lock()
		defer good.mu.Unlock()
		invalid := 0
		for _, m := range good.last.members {
			if _, isBad := bad[m.Name]; isBad && m.TagsErr != nil {
				invalid++
			}
		}
		if invalid != len(bad) {
			return fmt.Errorf("%d of %d bad members listed with a tag error", invalid, len(bad))
		}
		return nil
	})
	good.mu.Lock()
	want := good.last.desired
	good.mu.Unlock()
	if len(want.Peers) != 0 || len(want.Routes) != 0 {
		t.Errorf("bad members became peers %v or routes %v", want.Peers, want.Routes)
	}
	if v := good.metrics.invalid.Value(); v != float64(len(bad)) {
		t.Errorf("weft_members_invalid_tags = %v, want %d", v, len(bad))
	}
	// bad-key claimed 100.64.1.0/24 in malformed tags: the claim is void.
	for _, m := range good.Report().Members {
		if m.Name == "bad-key" && m.OwnsBlock {
			t.Errorf("a member with malformed tags owns a block")
		}
	}
}
