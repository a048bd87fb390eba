package agent

import (
	"bytes"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/membership"
	"github.com/weftnet/weft/agent/plan"
)

// Issue 4: the gossip keyring rotates install -> use -> remove across live
// agents: afterwards a member with only the new key joins, one with only
// the old key cannot.
func TestGossipKeyRotation(t *testing.T) {
	pool := plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/20"), BlockBits: 24, TTL: time.Minute}
	s := newSim(t, pool)
	s.profile = "local"
	names := []string{"a", "b", "c"}
	for _, n := range names {
		s.start(n, 0, false)
	}
	waitUntil(t, 20*time.Second, "mesh", func() error { return s.settled(names) })
	old := s.key
	newKey, _ := membership.GenerateGossipKey()
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

// The keyring follows the key file: the operator's three edits (install,
// use, remove) reach live agents without a restart; afterwards a member
// with only the new key joins and one with only the old key cannot.
func TestGossipKeyFileRotation(t *testing.T) {
	pool := plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/20"), BlockBits: 24, TTL: time.Minute}
	s := newSim(t, pool)
	s.profile = "local"
	old := s.key
	newKey, _ := membership.GenerateGossipKey()
	var mu sync.Mutex
	file := [][]byte{old}
	s.keySource = func() ([][]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		return file, nil
	}
	edit := func(keys ...[]byte) {
		mu.Lock()
		file = keys
		mu.Unlock()
	}
	names := []string{"a", "b", "c"}
	for _, n := range names {
		s.start(n, 0, false)
	}
	waitUntil(t, 20*time.Second, "mesh", func() error { return s.settled(names) })

	keyringIs := func(primary []byte, n int) func() error {
		return func() error {
			for _, name := range names {
				keys := s.all[name].mem.Keys() // primary first
				if len(keys) == 0 {
					return fmt.Errorf("%s: no keyring", name)
				}
				if !bytes.Equal(keys[0], primary) || len(keys) != n {
					return fmt.Errorf("%s: %d keys, primary is new: %v", name, len(keys), bytes.Equal(keys[0], newKey))
				}
			}
			return nil
		}
	}
	edit(old, newKey)
	waitUntil(t, 10*time.Second, "new key installed everywhere", keyringIs(old, 2))
	edit(newKey, old)
	waitUntil(t, 10*time.Second, "new key primary everywhere", keyringIs(newKey, 2))
	edit(newKey)
	waitUntil(t, 10*time.Second, "old key removed everywhere", keyringIs(newKey, 1))
	waitUntil(t, 10*time.Second, "mesh still whole", func() error { return s.settled(names) })
	if v := s.all["a"].metrics.gossipKeyChanges.Value(); v != 3 {
		t.Errorf("weft_gossip_keyring_changes_total = %v, want 3", v)
	}

	s.keySource = nil
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
			t.Fatalf("a member with the removed key got in (%s)", m.Status)
		}
	}
}

func TestSetKeyringErrors(t *testing.T) {
	pool := plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/20"), BlockBits: 24, TTL: time.Minute}
	s := newSim(t, pool)
	s.profile = "local"
	a := s.start("a", 0, false)
	waitUntil(t, 10*time.Second, "started", func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.mem == nil {
			return fmt.Errorf("no membership yet")
		}
		return nil
	})
	if _, err := a.mem.SetKeyring(nil); err == nil {
		t.Error("an empty keyring was accepted")
	}
	if _, err := a.mem.SetKeyring([][]byte{[]byte("short")}); err == nil {
		t.Error("a 5-byte key was accepted")
	}
	if kr := a.mem.Keys(); len(kr) != 1 || !bytes.Equal(kr[0], s.key) {
		t.Errorf("a failed update changed the keyring (%d keys)", len(kr))
	}
}
