package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// weftPkg is the package this test lists the dependencies of: the one
// binary weft ships.
const weftPkg = "github.com/weftnet/weft/cmd/weft"

// harnessPrefixes are import paths (and everything below them) that are
// test harness and must never be linked into the weft binary.
var harnessPrefixes = []string{
	"github.com/weftnet/weft/internal/harness",
	// Where the harness lived before internal/harness; listed so that a
	// package brought back there is caught too.
	"github.com/weftnet/weft/internal/harness/e2e",
	"github.com/weftnet/weft/internal/harness/k8stest",
	"github.com/weftnet/weft/internal/harness/labtest",
	// The standard library's and the tests' own helpers.
	"testing",
	"net/http/httptest",
	"go.uber.org/goleak",
	"github.com/google/go-cmp",
}

// labPkg is the lab the binary links for `weft demo` and `weft bench`.
const labPkg = "github.com/weftnet/weft/internal/netlab"

// harnessFuncs are the fault-injection and `go build` runner functions
// (internal/harness/faults, internal/harness/gobuild). They once lived in
// the lab package itself, where no import path would show them, so the
// lab's source is checked for them by name.
var harnessFuncs = map[string]string{
	"SetNetem":      "fault injection",
	"ClearNetem":    "fault injection",
	"Partition":     "fault injection",
	"Heal":          "fault injection",
	"Cut":           "fault injection",
	"Uncut":         "fault injection",
	"BuildWeft":     "go build runner",
	"BuildStatic":   "go build runner",
	"BuildWeftTemp": "go build runner",
}

// TestNoHarnessLinked: `go list -deps` of the weft binary names no test
// harness package, and the lab it links declares none of the harness's
// functions.
func TestNoHarnessLinked(t *testing.T) {
	goTool := findGo(t)
	out, err := exec.Command(goTool, "list", "-deps", "-f",
		"{{.ImportPath}}\t{{.Dir}}\t{{join .GoFiles \",\"}}", weftPkg).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list -deps %s: %v\n%s", weftPkg, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", weftPkg, err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, rest, _ := strings.Cut(line, "\t")
		dir, files, _ := strings.Cut(rest, "\t")
		for _, p := range harnessPrefixes {
			if path == p || strings.HasPrefix(path, p+"/") {
				t.Errorf("%s links %s: test harness (%s)", weftPkg, path, p)
			}
		}
		if path == labPkg {
			checkLabFuncs(t, dir, strings.Split(files, ","))
		}
	}
}

// checkLabFuncs fails for every harness function declared in the lab's
// files.
func checkLabFuncs(t *testing.T, dir string, files []string) {
	t.Helper()
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok {
				continue
			}
			if what, bad := harnessFuncs[fn.Name.Name]; bad {
				t.Errorf("%s links %s.%s (%s, in %s): test harness", weftPkg, labPkg, fn.Name.Name, what, name)
			}
		}
	}
}

// findGo returns the go tool: the one on PATH, else GOROOT's.
func findGo(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(p); err == nil {
		return p
	}
	t.Skip("no go tool on PATH or in GOROOT/bin: cannot list the binary's dependencies")
	return ""
}
