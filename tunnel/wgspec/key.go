package wgspec

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// KeyLen is the length of a WireGuard key in bytes.
const KeyLen = 32

// Key is a WireGuard public (or preshared) key. Its String form is the usual
// base64 encoding.
type Key [KeyLen]byte

// ErrBadKey is returned (wrapped) for a key that is not 32 bytes of base64.
var ErrBadKey = errors.New("bad key")

// String is the base64 form of the key.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// PublicKey is the public key of k read as a private key.
func (k Key) PublicKey() Key {
	var pub, priv [KeyLen]byte = [KeyLen]byte{}, [KeyLen]byte(k)
	curve25519.ScalarBaseMult(&pub, &priv) //nolint:staticcheck // the clamping X25519 of wgctrl's Key.PublicKey
	return Key(pub)
}

// ParseKey decodes a base64 public, private or preshared key. The error
// never contains the input.
func ParseKey(s string) (Key, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return Key{}, fmt.Errorf("%w: not base64", ErrBadKey)
	}
	if len(b) != KeyLen {
		return Key{}, fmt.Errorf("%w: %d bytes, want %d", ErrBadKey, len(b), KeyLen)
	}
	return Key(b), nil
}

// Fingerprint is a short, stable name for a public key: the first 8 base64
// characters of its SHA-256, like the short ids other tools print.
func Fingerprint(k Key) string {
	sum := sha256.Sum256(k[:])
	return base64.RawURLEncoding.EncodeToString(sum[:])[:8]
}
