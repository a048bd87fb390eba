package demo_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/demo"
	"github.com/weftnet/weft/internal/harness/gobuild"
	"github.com/weftnet/weft/internal/netlab"
)

// Issue 6, test 6: `weft demo` twice in a row: both exit 0, and after each
// nothing of it is left: no namespace, link, UAPI socket or process naming
// its lab, nothing in its temporary directory.
//
// Other lab tests may run on this machine at the same time, so what a run
// leaves is what carries its lab id (printed by the demo), and TMPDIR is a
// directory of the test's own.
func TestDemoTwiceNoLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the demo creates network namespaces, TUN devices and runs agents")
	}
	if testing.Short() {
		t.Skip("runs the whole demo twice (about 30 s); runs without -short")
	}
	bin, err := gobuild.Weft(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	for run := 1; run <= 2; run++ {
		wgBefore := list(t, demo.WireGuardRunDir)
		nsBefore := list(t, netlab.NetnsDir)
		var out bytes.Buffer
		c := exec.Command(bin, "demo", "--pods", "1", "--transfer-mib", "8")
		c.Env = append(os.Environ(), "TMPDIR="+tmp)
		c.Stdout, c.Stderr = &out, &out
		if err := c.Run(); err != nil {
			t.Fatalf("run %d: weft demo: %v\n%s", run, err, out.String())
		}
		if !strings.Contains(out.String(), "==> all checks passed") {
			t.Errorf("run %d: no \"all checks passed\" in the output:\n%s", run, out.String())
		}
		m := regexp.MustCompile(`lab id ([0-9a-f]{6})`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("run %d: no lab id in the output:\n%s", run, out.String())
		}
		id := m[1]
		t.Logf("run %d: lab %s", run, id)

		for _, n := range list(t, netlab.NetnsDir) {
			if strings.Contains(n, id) {
				t.Errorf("run %d: namespace %s left behind", run, n)
			}
		}
		for _, f := range list(t, demo.WireGuardRunDir) {
			if strings.Contains(f, id) {
				t.Errorf("run %d: UAPI socket %s left behind", run, f)
			}
		}
		links, err := exec.Command("ip", "-o", "link", "show").Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(links), id) {
			t.Errorf("run %d: a link naming lab %s in the root namespace:\n%s", run, id, links)
		}
		if pids := processesWith(id); len(pids) != 0 {
			t.Errorf("run %d: processes still running with lab %s in their command line: %v", run, id, pids)
		}
		if left := list(t, tmp); len(left) != 0 {
			t.Errorf("run %d: left in its temp dir: %v", run, left)
		}
		// Whatever else appeared belongs to concurrent tests: say so.
		for _, s := range added(wgBefore, list(t, demo.WireGuardRunDir)) {
			t.Logf("run %d: new in %s (not this lab's): %s", run, demo.WireGuardRunDir, s)
		}
		for _, s := range added(nsBefore, list(t, netlab.NetnsDir)) {
			t.Logf("run %d: new in %s (not this lab's): %s", run, netlab.NetnsDir, s)
		}
	}
}

// TestDownRemovesOnlyStale: --down removes a dead demo's temp dir and a
// lab UAPI socket nothing listens on, and keeps a live demo's dir, a live
// socket and files that are not lab sockets. (Namespaces are left out: on
// a shared machine removing every weft-* namespace would break other runs.)
func TestDownRemovesOnlyStale(t *testing.T) {
	tmp, wg := t.TempDir(), t.TempDir()
	dead := filepath.Join(tmp, demo.TempPrefix+"abc123-1")
	live := filepath.Join(tmp, demo.TempPrefix+"def456-2")
	for dir, pid := range map[string]int{dead: deadPid(t), live: os.Getpid()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "pids"), []byte(fmt.Sprintln(pid)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	stale := filepath.Join(wg, "wfabc123-n1.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	liveSock := filepath.Join(wg, "wfdef456-n2.sock")
	ll, err := net.Listen("unix", liveSock)
	if err != nil {
		t.Fatal(err)
	}
	defer ll.Close()
	other := filepath.Join(wg, "wg0.sock")
	ol, err := net.Listen("unix", other)
	if err != nil {
		t.Fatal(err)
	}
	ol.(*net.UnixListener).SetUnlinkOnClose(false)
	ol.Close()

	done, err := demo.Down(demo.DownConfig{TempDir: tmp, WireGuardDir: wg, SkipNetns: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("down: %v", done)
	for _, p := range []string{dead, stale} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed (%v)", p, err)
		}
	}
	for _, p := range []string{live, liveSock, other} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}

// deadPid is the pid of a process that has exited.
func deadPid(t *testing.T) int {
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	return c.Process.Pid
}

func list(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func added(before, after []string) []string {
	var out []string
	for _, s := range after {
		if !slices.Contains(before, s) {
			out = append(out, s)
		}
	}
	return out
}

// processesWith lists the pids whose command line contains s.
func processesWith(s string) []string {
	// A process may be exiting right now: give it a moment.
	var pids []string
	for try := 0; try < 20; try++ {
		pids = pids[:0]
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err == nil && bytes.Contains(b, []byte(s)) && e.Name() != fmt.Sprint(os.Getpid()) {
				pids = append(pids, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
		if len(pids) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return pids
}
