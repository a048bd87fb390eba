package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/internal/atomicfile"
	"github.com/weftnet/weft/tunnel/wgspec"
)

// Key is a WireGuard public (or preshared) key. Its String form is the usual
// base64 encoding.
type Key = wgspec.Key

// PrivateKey is a WireGuard private key. It never prints itself: String,
// GoString, slog and fmt's %v all show only the public key's fingerprint, so a
// private key cannot leak into a log line by accident. Use Encode to write it
// to a key file.
type PrivateKey struct{ k wgtypes.Key }

// ErrBadKey is returned (wrapped) for a key that is not 32 bytes of base64.
var ErrBadKey = wgspec.ErrBadKey

// GeneratePrivateKey returns a new random private key.
func GeneratePrivateKey() (PrivateKey, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return PrivateKey{}, fmt.Errorf("generate private key: %w", err)
	}
	return PrivateKey{k}, nil
}

// ParsePrivateKey decodes a base64 private key, as `wg genkey` prints it.
// The error never contains the input.
func ParsePrivateKey(s string) (PrivateKey, error) {
	k, err := parseKey(s)
	if err != nil {
		return PrivateKey{}, err
	}
	return PrivateKey{k}, nil
}

// ParseKey decodes a base64 public or preshared key.
func ParseKey(s string) (Key, error) { return wgspec.ParseKey(s) }

func parseKey(s string) (wgtypes.Key, error) {
	k, err := wgspec.ParseKey(s)
	return wgtypes.Key(k), err
}

// IsZero reports whether the key is unset.
func (p PrivateKey) IsZero() bool { return p.k == wgtypes.Key{} }

// Public returns the public key of p.
func (p PrivateKey) Public() Key { return Key(p.k.PublicKey()) }

// Encode returns the base64 form of the private key, for a key file only.
func (p PrivateKey) Encode() string { return p.k.String() }

// String shows the fingerprint of the public key, never the private key.
func (p PrivateKey) String() string {
	if p.IsZero() {
		return "PrivateKey(unset)"
	}
	return "PrivateKey(pub " + Fingerprint(p.Public()) + ")"
}

// GoString is String, so %#v does not print the key bytes either.
func (p PrivateKey) GoString() string { return p.String() }

// LogValue keeps private keys out of structured logs.
func (p PrivateKey) LogValue() slog.Value { return slog.StringValue(p.String()) }

// wg returns the key for the wgctrl and UAPI layers.
func (p PrivateKey) wg() wgtypes.Key { return p.k }

// Fingerprint is a short, stable name for a public key: the first 8 base64
// characters of its SHA-256, like the short ids other tools print.
func Fingerprint(k Key) string { return wgspec.Fingerprint(k) }

// LoadPrivateKey reads a key file written by SavePrivateKey or `wg genkey`.
// A key file readable by group or others is refused.
func LoadPrivateKey(path string) (PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("load key %s: %w", path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return PrivateKey{}, fmt.Errorf("load key %s: mode %04o lets others read it, want 0600", path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("load key %s: %w", path, err)
	}
	k, err := ParsePrivateKey(string(b))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("load key %s: %w", path, err)
	}
	return k, nil
}

// SavePrivateKey writes the key to path with mode 0600, atomically: a temp
// file in the same directory, fsync, rename, fsync of the directory. A crash
// leaves either the old key or the new one, never half a key.
func SavePrivateKey(path string, k PrivateKey) error {
	if k.IsZero() {
		return fmt.Errorf("save key %s: key is unset", path)
	}
	return atomicfile.Write(path, []byte(k.Encode()+"\n"), 0o600)
}

// LoadOrCreatePrivateKey loads the key at path, or generates and saves one if
// the file does not exist.
func LoadOrCreatePrivateKey(path string) (k PrivateKey, created bool, err error) {
	k, err = LoadPrivateKey(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return PrivateKey{}, false, err
	}
	if k, err = GeneratePrivateKey(); err != nil {
		return PrivateKey{}, false, err
	}
	if err = SavePrivateKey(path, k); err != nil {
		return PrivateKey{}, false, err
	}
	return k, true, nil
}
