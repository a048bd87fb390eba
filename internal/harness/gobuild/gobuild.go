package gobuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// WeftPkg is the import path of the weft binary.
const WeftPkg = "github.com/weftnet/weft/cmd/weft"

// Weft builds the weft binary into dir and returns its path. It is built
// as the image ships it (Static; make build does the same), so what the
// lab measures, RSS above all, is what a node runs.
func Weft(dir string) (string, error) {
	bin := filepath.Join(dir, "weft")
	if err := Static(WeftPkg, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// Static builds pkg into out as weft's images ship their binaries: static
// (no cgo), -trimpath, -s -w.
func Static(pkg, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// WeftTemp builds the weft binary into a new temporary directory (named
// from pattern, as os.MkdirTemp) and returns its path and a cleanup that
// removes the directory: what every test package running agents needs
// once in its TestMain.
func WeftTemp(pattern string) (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	// Lab sidecars run the binary as an unprivileged user.
	if err := os.Chmod(dir, 0o755); err != nil {
		cleanup()
		return "", nil, err
	}
	if bin, err = Weft(dir); err != nil {
		cleanup()
		return "", nil, err
	}
	return bin, cleanup, nil
}
