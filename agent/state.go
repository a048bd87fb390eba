package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/weftnet/weft/internal/atomicfile"
	"github.com/weftnet/weft/tunnel"
)

// stateVersion is bumped when the state file's meaning changes; a file of
// another version is discarded, not misread.
const stateVersion = 1

// State is what an agent keeps on disk across restarts: its identity and its
// lease, so a restarted agent announces the same key and block and its pods
// keep their addresses.
type State struct {
	// NodeName the state belongs to. A state file of another node (a reused
	// disk, a renamed node) is not adopted.
	NodeName string
	Key      tunnel.PrivateKey
	// Range is the pool the block was leased from; a reinstall with another
	// cluster range drops the stale block instead of announcing it.
	Range     netip.Prefix
	Block     netip.Prefix
	LeaseTime int64
}

type stateFile struct {
	Version    int    `json:"version"`
	NodeName   string `json:"node"`
	PrivateKey string `json:"private_key"`
	Range      string `json:"range,omitempty"`
	Block      string `json:"block,omitempty"`
	LeaseTime  int64  `json:"lease_time,omitempty"`
}

// ErrStateMismatch says a state file exists but belongs to another node or
// version; the caller starts fresh (and logs why).
var ErrStateMismatch = errors.New("state file does not match this agent")

// LoadState reads the state file. A missing file is os.ErrNotExist. The
// file must be mode 0600: it holds the private key.
func LoadState(path, nodeName string) (State, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return State{}, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return State{}, fmt.Errorf("state %s: mode %04o lets others read the private key, want 0600", path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return State{}, fmt.Errorf("state %s: %w", path, err)
	}
	return decodeState(b, nodeName)
}

func decodeState(b []byte, nodeName string) (State, error) {
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return State{}, fmt.Errorf("state: not valid JSON: %w", err)
	}
	if f.Version != stateVersion {
		return State{}, fmt.Errorf("%w: version %d, want %d", ErrStateMismatch, f.Version, stateVersion)
	}
	if f.NodeName != nodeName {
		return State{}, fmt.Errorf("%w: written by node %q, this is %q", ErrStateMismatch, f.NodeName, nodeName)
	}
	k, err := tunnel.ParsePrivateKey(f.PrivateKey)
	if err != nil {
		return State{}, fmt.Errorf("state: %w", err)
	}
	st := State{NodeName: f.NodeName, Key: k, LeaseTime: f.LeaseTime}
	if f.Block != "" {
		if st.Block, err = netip.ParsePrefix(f.Block); err != nil || st.Block != st.Block.Masked() {
			return State{}, fmt.Errorf("state: block %q is not a network prefix", f.Block)
		}
		if st.Range, err = netip.ParsePrefix(f.Range); err != nil {
			return State{}, fmt.Errorf("state: range %q is not a prefix", f.Range)
		}
	}
	return st, nil
}

// SaveState writes the state file atomically with mode 0600. The lease is
// persisted before it is announced or used.
func SaveState(path string, st State) error {
	f := stateFile{Version: stateVersion, NodeName: st.NodeName, PrivateKey: st.Key.Encode(), LeaseTime: st.LeaseTime}
	if st.Block.IsValid() {
		f.Block, f.Range = st.Block.String(), st.Range.String()
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}
