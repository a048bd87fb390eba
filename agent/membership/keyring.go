package membership

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
)

// The gossip keyring follows the key file (a Kubernetes Secret): every
// agent re-reads it and makes its local keyring match, first key primary.
// An operator rotates in three edits, each given time to reach every node:
//
//  1. "old\nnew": every agent installs new (still sending with old);
//  2. "new\nold": agents send with new, and all can still read old;
//  3. "new": old is removed.
//
// Nothing is broadcast, so a node whose Secret lags only lags, and a
// restarted agent starts from the same file. Membership.RotateGossipKey is
// the cluster-wide alternative (Serf's key queries) for meshes without a
// shared file.

// ErrNoKeyring is returned when the keyring is changed on a member that
// runs without gossip encryption.
var ErrNoKeyring = errors.New("gossip runs without a keyring (--insecure-gossip)")

// SetKeyring makes the local keyring hold exactly keys, keys[0] primary. It
// reports whether anything changed. Keys are never logged.
func (m *Membership) SetKeyring(keys [][]byte) (bool, error) {
	if m.keyring == nil {
		return false, ErrNoKeyring
	}
	if len(keys) == 0 {
		return false, fmt.Errorf("gossip keyring: %w: no key", ErrBadGossipKey)
	}
	changed := false
	have := m.keyring.GetKeys()
	for _, k := range keys {
		if !slices.ContainsFunc(have, func(h []byte) bool { return bytes.Equal(h, k) }) {
			if err := m.keyring.AddKey(k); err != nil {
				return changed, fmt.Errorf("gossip keyring: install: %w", err)
			}
			changed = true
		}
	}
	if !bytes.Equal(m.keyring.GetPrimaryKey(), keys[0]) {
		if err := m.keyring.UseKey(keys[0]); err != nil {
			return changed, fmt.Errorf("gossip keyring: use: %w", err)
		}
		changed = true
	}
	for _, h := range m.keyring.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(h, k) }) {
			if err := m.keyring.RemoveKey(h); err != nil {
				return changed, fmt.Errorf("gossip keyring: remove: %w", err)
			}
			changed = true
		}
	}
	return changed, nil
}

// RotateGossipKey installs key on every member, makes it the primary, and
// removes old: Serf's install -> use -> remove, each step cluster-wide.
func (m *Membership) RotateGossipKey(key, old []byte) error {
	km := m.serf.KeyManager()
	enc := encodeKey(key)
	if _, err := km.InstallKey(enc); err != nil {
		return fmt.Errorf("gossip key rotation: install: %w", err)
	}
	if _, err := km.UseKey(enc); err != nil {
		return fmt.Errorf("gossip key rotation: use: %w", err)
	}
	if old != nil {
		if _, err := km.RemoveKey(encodeKey(old)); err != nil {
			return fmt.Errorf("gossip key rotation: remove old: %w", err)
		}
	}
	return nil
}
