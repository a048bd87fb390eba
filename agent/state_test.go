package agent

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/agent/membership"
	"github.com/weftnet/weft/tunnel"
)

func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	k, _ := tunnel.GeneratePrivateKey()
	st := State{NodeName: "n1", Key: k, Range: netip.MustParsePrefix("100.64.0.0/16"), Block: netip.MustParsePrefix("100.64.7.0/24"), LeaseTime: 1234}
	if err := SaveState(path, st); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %04o", fi.Mode().Perm())
	}
	got, err := LoadState(path, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Key.Public() != k.Public() || got.Block != st.Block || got.Range != st.Range || got.LeaseTime != 1234 {
		t.Fatalf("got %+v", got)
	}
	if _, err := LoadState(path, "n2"); !errors.Is(err, ErrStateMismatch) {
		t.Errorf("another node's state adopted: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadState(path, "n1"); err == nil || !strings.Contains(err.Error(), "0644") {
		t.Errorf("readable state accepted: %v", err)
	}
}

func TestStateRejectsGarbage(t *testing.T) {
	for name, body := range map[string]string{
		"not json":    "{",
		"old version": `{"version":0,"node":"n1"}`,
		"bad key":     `{"version":1,"node":"n1","private_key":"xx"}`,
		"bad block":   `{"version":1,"node":"n1","private_key":"` + mustKey(t) + `","block":"100.64.0.1/24","range":"100.64.0.0/16"}`,
	} {
		if _, err := decodeState([]byte(body), "n1"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func mustKey(t *testing.T) string {
	k, _ := tunnel.GeneratePrivateKey()
	return k.Encode()
}

func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"version":1,"node":"n1","private_key":"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=","block":"100.64.0.0/24","range":"100.64.0.0/16","lease_time":5}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeState(b, "n1")
		if err == nil && st.Block.IsValid() && st.Block != st.Block.Masked() {
			t.Fatalf("unmasked block accepted: %s", st.Block)
		}
	})
}

func TestParseGossipKeys(t *testing.T) {
	k32, _ := membership.GenerateGossipKey()
	text := "# primary\n" + base64.StdEncoding.EncodeToString(k32) + "\n\n" + base64.StdEncoding.EncodeToString(k32[:16]) + "\n"
	keys, err := membership.ParseGossipKeys(text)
	if err != nil || len(keys) != 2 || len(keys[0]) != 32 || len(keys[1]) != 16 {
		t.Fatalf("got %d keys, %v", len(keys), err)
	}
	for _, bad := range []string{"", "# only a comment\n", "not-base64!", base64.StdEncoding.EncodeToString(k32[:20])} {
		_, err := membership.ParseGossipKeys(bad)
		if !errors.Is(err, membership.ErrBadGossipKey) {
			t.Errorf("ParseGossipKeys(%q) = %v", bad, err)
		}
		if bad != "" && err != nil && strings.Contains(err.Error(), bad) {
			t.Errorf("error repeats the key material: %v", err)
		}
	}
}
