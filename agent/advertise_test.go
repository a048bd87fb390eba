package agent

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func startTestMember(t *testing.T, name string, key []byte, tags Tags) *Membership {
	t.Helper()
	m, err := StartMembership(MembershipConfig{
		NodeName: name,
		Bind:     netip.MustParseAddrPort("127.0.0.1:0"),
		Keys:     [][]byte{key},
		Profile:  "local",
		Tags:     tags,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// memberlist can drop our own tag update for good when a refutation races
// it (checkAdvertised). Here the update is lost on purpose: the tags we
// want change without reaching memberlist, as after that race. The self
// check finds the difference and announces them; the other member then
// sees the new block.
func TestLostTagUpdateIsAnnouncedAgain(t *testing.T) {
	key, err := GenerateGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	ta, tb := sampleHostTags(), sampleHostTags()
	tb.PublicKey = fakeKey(9)
	tb.Block = netip.MustParsePrefix("100.64.4.0/24")
	a := startTestMember(t, "adv-a", key, ta)
	b := startTestMember(t, "adv-b", key, tb)
	if _, err := b.Join([]string{a.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	blockOfA := func() (netip.Prefix, error) {
		for _, m := range b.Members() {
			if m.Name == "adv-a" {
				return m.Tags.Block, nil
			}
		}
		return netip.Prefix{}, fmt.Errorf("b does not see a")
	}
	waitUntil(t, 10*time.Second, "b sees a", func() error { _, err := blockOfA(); return err })

	moved := ta
	moved.Block = netip.MustParsePrefix("100.64.5.0/24")
	enc, err := moved.Encode()
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.want = enc
	a.mu.Unlock()
	// Nothing has been announced yet: the check sees the difference.
	if got, _ := blockOfA(); got != ta.Block {
		t.Fatalf("b sees a's block %s before any announcement", got)
	}
	a.tagsSet <- struct{}{} // as SetTags does; the check follows within seconds
	waitUntil(t, 15*time.Second, "b sees a's new block", func() error {
		got, err := blockOfA()
		if err == nil && got != moved.Block {
			err = fmt.Errorf("b sees a's block %s", got)
		}
		return err
	})
	if a.checkAdvertised() {
		t.Error("the check announced again although memberlist advertises what we want")
	}
}
