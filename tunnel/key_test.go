package tunnel_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/tunnel"
)

func TestKeyFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "private.key")
	k, created, err := tunnel.LoadOrCreatePrivateKey(path)
	if err != nil || !created {
		t.Fatalf("create: %v (created %v)", err, created)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	again, created, err := tunnel.LoadOrCreatePrivateKey(path)
	if err != nil || created {
		t.Fatalf("reload: %v (created %v)", err, created)
	}
	if again.Public() != k.Public() {
		t.Fatal("reloaded key differs")
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*"))
	if len(leftovers) != 0 {
		t.Errorf("temp files left: %v", leftovers)
	}
}

func TestKeyFileRefusesLooseMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	k, _ := tunnel.GeneratePrivateKey()
	if err := os.WriteFile(path, []byte(k.Encode()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tunnel.LoadPrivateKey(path); err == nil || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("loose key file accepted: %v", err)
	}
}

func TestBadKeyFileErrorHidesContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	secret := "c2VjcmV0LWJ1dC1ub3QtYS1rZXk="
	os.WriteFile(path, []byte(secret), 0o600)
	_, err := tunnel.LoadPrivateKey(path)
	if !errors.Is(err, tunnel.ErrBadKey) {
		t.Fatalf("err = %v, want ErrBadKey", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error repeats the file's content: %v", err)
	}
}

// A private key never shows up in fmt or slog output.
func TestPrivateKeyNeverPrinted(t *testing.T) {
	k, _ := tunnel.GeneratePrivateKey()
	secret := k.Encode()
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "key", k, "cfg", tunnel.Config{PrivateKey: k})
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "key", k)
	for _, s := range []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k),
		fmt.Sprintf("%+v", tunnel.Config{PrivateKey: k}), logs.String(),
	} {
		if strings.Contains(s, secret) {
			t.Fatalf("private key printed: %s", s)
		}
	}
	if !strings.Contains(fmt.Sprint(k), tunnel.Fingerprint(k.Public())) {
		t.Errorf("String %q lacks the public fingerprint", fmt.Sprint(k))
	}
}

func TestParseKey(t *testing.T) {
	k, _ := tunnel.GeneratePrivateKey()
	pub := k.Public().String()
	if got, err := tunnel.ParseKey(" " + pub + "\n"); err != nil || got.String() != pub {
		t.Fatalf("ParseKey(%q) = %v, %v", pub, got, err)
	}
	for _, bad := range []string{"", "not base64!", "AAAA", pub + "AAAA", strings.Repeat("A", 43) + "="[:0]} {
		if _, err := tunnel.ParseKey(bad); !errors.Is(err, tunnel.ErrBadKey) {
			t.Errorf("ParseKey(%q) = %v, want ErrBadKey", bad, err)
		}
	}
}
