package agent

import (
	"net/netip"
	"testing"
	"time"
)

// Issue 4: the gossip keyring rotates install -> use -> remove across live
// agents: afterwards a member with only the new key joins, one with only
// the old key cannot.
func TestGossipKeyRotation(t *testing.T) {
	pool := LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/20"), BlockBits: 24, TTL: time.Minute}
	s := newSim(t, pool)
	s.profile = "local"
	names := []string{"a", "b", "c"}
	for _, n := range names {
		s.start(n, 0, false)
	}
	waitUntil(t, 20*time.Second, "mesh", func() error { return s.settled(names) })
	old := s.key
	newKey, _ := GenerateGossipKey()
	if err := s.all["a"].mem.RotateGossipKey(newKey, old); err != nil {
		t.Fatal(err)
	}

	s.key = newKey
	s.start("fresh", 0, false)
	waitUntil(t, 20*time.Second, "a member with only the new key joins", func() error {
		return s.settled(append(names, "fresh"))
	})

	s.key = old
	s.start("stale", 0, false)
	time.Sleep(3 * time.Second)
	for _, m := range s.all["a"].mem.Members() {
		if m.Name == "stale" {
			t.Fatalf("a member with the retired key got in (%s)", m.Status)
		}
	}
	if n := len(s.all["stale"].mem.Members()); n != 1 {
		t.Errorf("the stale member sees %d members", n)
	}
}
