package docs

import (
	"os/exec"
	"strings"
	"testing"
)

// TestEveryPackageSaysItsJob lists every package of the module with the go
// tool and fails for one without a package comment: the comment is where a
// newcomer reads what the package is for (docs/design.md lists them all).
func TestEveryPackageSaysItsJob(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH to list the module's packages")
	}
	out, err := exec.Command(goTool, "list", "-f", "{{.ImportPath}}\t{{.Doc}}", "github.com/weftnet/weft/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, doc, _ := strings.Cut(line, "\t")
		n++
		if strings.TrimSpace(doc) == "" {
			t.Errorf("%s has no package comment saying what it is for", path)
		}
	}
	if n < 20 {
		t.Fatalf("go list found %d packages; want the whole module", n)
	}
}
