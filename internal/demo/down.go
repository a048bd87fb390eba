package demo

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// WireGuardRunDir is where userspace WireGuard devices keep their UAPI
// sockets (hard-coded in wireguard-go and wg).
const WireGuardRunDir = "/var/run/wireguard"

// labSocket matches the UAPI socket of a lab interface: wf<lab id>-<node>
// (agents, weft pairs), wp... (`weft tunnel up` pairs), wg... (stock
// wireguard-go pairs), see internal/netlab and internal/bench.
var labSocket = regexp.MustCompile(`^w[fpg][0-9a-f]{6}-n[0-9]+\.sock$`)

// DownConfig says where --down looks; the zero value means the real places.
type DownConfig struct {
	// TempDir holds the demos' temporary directories (os.TempDir()).
	TempDir string
	// WireGuardDir holds UAPI sockets (WireGuardRunDir).
	WireGuardDir string
	// SkipNetns leaves the namespaces alone (tests of the rest).
	SkipNetns bool
}

// Down removes what crashed runs left: the agents of dead demos and their
// temporary directories, every weft-* namespace, and lab UAPI sockets no
// device listens on any more. It returns one line per thing removed.
func Down(cfg DownConfig) ([]string, error) {
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	if cfg.WireGuardDir == "" {
		cfg.WireGuardDir = WireGuardRunDir
	}
	var done []string
	var errs []error
	// Agents first: they hold devices in the namespaces.
	dirs, _ := filepath.Glob(filepath.Join(cfg.TempDir, TempPrefix+"*"))
	for _, dir := range dirs {
		pids := readPids(filepath.Join(dir, pidFile))
		if len(pids) > 0 && alive(pids[0]) {
			continue // a demo still running (--keep) owns it
		}
		for _, pid := range pids[min(1, len(pids)):] {
			// Only a process started with this directory in its command
			// line is ours: the pid may have been reused since.
			if alive(pid) && cmdlineHas(pid, dir) {
				syscall.Kill(pid, syscall.SIGTERM)
				waitGone(pid, 5*time.Second)
				done = append(done, fmt.Sprintf("stopped agent pid %d", pid))
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, "removed "+dir)
	}
	if !cfg.SkipNetns {
		removed, err := netlab.Cleanup()
		for _, n := range removed {
			done = append(done, "removed netns "+n)
		}
		errs = append(errs, err)
	}
	ents, _ := os.ReadDir(cfg.WireGuardDir)
	for _, e := range ents {
		if !labSocket.MatchString(e.Name()) {
			continue
		}
		p := filepath.Join(cfg.WireGuardDir, e.Name())
		removed, err := removeStaleSocket(p)
		errs = append(errs, err)
		if removed {
			done = append(done, "removed stale "+p)
		}
	}
	return done, errors.Join(errs...)
}

// removeStaleSocket removes a unix socket nothing listens on.
func removeStaleSocket(path string) (bool, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return false, nil
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return false, nil // a live device
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return false, nil // not provably stale: leave it
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	return true, nil
}

func readPids(file string) []int {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func cmdlineHas(pid int, s string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(string(b), s)
}

func waitGone(pid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
