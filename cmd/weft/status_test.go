package main

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusNoAgent: with nothing listening on the socket, `weft status`
// (and `--json`) says so on stderr, prints nothing on stdout, and exits
// non-zero.
func TestStatusNoAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the weft binary; runs without -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "weft")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	socket := filepath.Join(dir, "no-such-agent.sock")
	for _, args := range [][]string{{"status", "--socket", socket}, {"status", "--json", "--socket", socket}} {
		var stdout, stderr bytes.Buffer
		c := exec.Command(bin, args...)
		c.Stdout, c.Stderr = &stdout, &stderr
		err := c.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("weft %s: exit %v, want a non-zero exit status", strings.Join(args, " "), err)
		}
		if stdout.Len() != 0 {
			t.Errorf("weft %s printed on stdout: %q", strings.Join(args, " "), stdout.String())
		}
		if msg := stderr.String(); !strings.Contains(msg, "no weft agent reachable at "+socket) {
			t.Errorf("weft %s: stderr %q does not name the socket it tried", strings.Join(args, " "), msg)
		}
	}
}
