package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/sidecar"
)

// The sidecar takes what to expose and forward from its flags and from
// the pod's annotations (the downward API file) together.
func TestSidecarTrafficFromAnnotations(t *testing.T) {
	dir := t.TempDir()
	ann := filepath.Join(dir, "annotations")
	os.WriteFile(ann, []byte(`weft.dev/expose="8080,53/udp"`+"\n"+`weft.dev/forward="5432=db.weft:5432"`+"\n"+`other="x"`+"\n"), 0o644)
	ports, fw, err := sidecarTraffic(ann, "9090", "6379=cache.weft:6379")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(sidecar.Ports{TCP: []uint16{8080, 9090}, UDP: []uint16{53}}, ports); d != "" {
		t.Errorf("ports (-want +got):\n%s", d)
	}
	var targets []string
	for _, f := range fw {
		targets = append(targets, f.Local.String()+"="+f.Target)
	}
	if got := strings.Join(targets, ","); got != "127.0.0.1:6379=cache.weft:6379,127.0.0.1:5432=db.weft:5432" {
		t.Errorf("forwards: %s", got)
	}

	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("weft.dev/expose=8080\n"), 0o644)
	if _, _, err := sidecarTraffic(bad, "", ""); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("unquoted annotation: %v, want an error naming line 1", err)
	}
	if _, _, err := sidecarTraffic(filepath.Join(dir, "missing"), "", ""); err == nil {
		t.Error("a missing annotations file was accepted")
	}
	if _, _, err := sidecarTraffic("", "http", ""); err == nil {
		t.Error("--expose http was accepted")
	}
}
