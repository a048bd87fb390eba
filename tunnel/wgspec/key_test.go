package wgspec

import (
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Key mirrors wgctrl's key: the same public key, the same text, and
// ParseKey reads what String writes.
func TestKeyMatchesWgctrl(t *testing.T) {
	for range 20 {
		priv, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		k := Key(priv)
		if got, want := k.PublicKey(), Key(priv.PublicKey()); got != want {
			t.Fatalf("public key %s, wgctrl says %s", got, want)
		}
		if k.String() != priv.String() {
			t.Fatalf("String %q, wgctrl's %q", k.String(), priv.String())
		}
		back, err := ParseKey(k.String())
		if err != nil || back != k {
			t.Fatalf("ParseKey(String) = %v, %v", back, err)
		}
	}
	if _, err := ParseKey("c2hvcnQ="); err == nil {
		t.Error("a 5-byte key parsed")
	}
}
