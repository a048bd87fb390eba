package cni

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// heavyDeps are module paths the CNI plugin must not link: the plugin runs
// once per pod operation and needs only the agent's small API package (a
// lease and a socket client), not gossip, WireGuard or a TCP/IP stack.
var heavyDeps = []string{
	"github.com/hashicorp/serf",
	"github.com/hashicorp/memberlist",
	"golang.zx2c4.com/wireguard",
	"gvisor.dev",
}

// TestPluginDependencies keeps the plugin's dependency tree small: it
// fails, naming the package, when the plugin links any of heavyDeps.
func TestPluginDependencies(t *testing.T) {
	gotool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(gotool); err != nil {
		if gotool, err = exec.LookPath("go"); err != nil {
			t.Skip("no go tool found (neither in GOROOT/bin nor on PATH) to list the plugin's dependencies")
		}
	}
	out, err := exec.Command(gotool, "list", "-deps", "github.com/weftnet/weft/cni").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, heavy := range heavyDeps {
			if pkg == heavy || strings.HasPrefix(pkg, heavy+"/") {
				t.Errorf("the CNI plugin depends on %s (module %s)", pkg, heavy)
			}
		}
	}
}
