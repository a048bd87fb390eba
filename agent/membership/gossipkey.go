package membership

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrBadGossipKey is returned (wrapped) for a gossip key that is not 16, 24
// or 32 bytes of base64.
var ErrBadGossipKey = errors.New("bad gossip key")

// GenerateGossipKey returns a new random 32-byte (AES-256) gossip key.
func GenerateGossipKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate gossip key: %w", err)
	}
	return k, nil
}

// ParseGossipKeys parses a keyring file's text: one base64 key per line,
// the first one primary; blank lines and #-comments are skipped. Errors name
// the line, never the key.
func ParseGossipKeys(text string) ([][]byte, error) {
	var keys [][]byte
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d is not base64", ErrBadGossipKey, i+1)
		}
		switch len(k) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("%w: line %d has %d bytes, want 16, 24 or 32", ErrBadGossipKey, i+1, len(k))
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key found", ErrBadGossipKey)
	}
	return keys, nil
}

// LoadGossipKeys reads a keyring file (a Kubernetes Secret mounted as a
// file, or one written by `weft keygen`).
func LoadGossipKeys(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip key file: %w", err)
	}
	keys, err := ParseGossipKeys(string(b))
	if err != nil {
		return nil, fmt.Errorf("gossip key file %s: %w", path, err)
	}
	return keys, nil
}

func encodeKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) }
