package netlab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SidecarConfig describes one `weft sidecar` process in a lab node, run the
// way a restricted cluster runs it: as an unprivileged user with no
// capabilities, and with no /dev/net/tun in its filesystem.
type SidecarConfig struct {
	// Bin is the weft binary; it and the directories above it must be
	// readable by UID.
	Bin string
	// Dir holds the sidecar's state dir and log; it is created and handed
	// to UID.
	Dir string
	// GossipKeyFile is copied into Dir, owned by UID, mode 0400 (a Secret
	// volume).
	GossipKeyFile string
	// Join is the node whose agent to join.
	Join *Node
	// UID and GID run the process (65534, nobody, if zero).
	UID, GID uint32
	// Env is added to the environment (WEFT_EXPOSE=..., WEFT_FORWARD=...).
	Env []string
	// Extra flags appended to the command line.
	Extra []string
}

// SidecarMetricsPort is where lab sidecars serve /healthz and /metrics.
const SidecarMetricsPort = 9464

// Sidecar is a running `weft sidecar`.
type Sidecar struct {
	Node *Node
	Dir  string
	process
}

// StartSidecar starts `weft sidecar` in node as cfg says. The process
// enters the node's network namespace and a mount namespace of its own in
// which /dev/net is an empty tmpfs, then runs as cfg.UID with no
// capabilities (SysProcAttr.Credential).
func (l *Lab) StartSidecar(node *Node, cfg SidecarConfig) (*Sidecar, error) {
	if cfg.UID == 0 {
		cfg.UID, cfg.GID = 65534, 65534
	}
	s := &Sidecar{Node: node, Dir: cfg.Dir, process: process{done: make(chan struct{})}}
	state := filepath.Join(cfg.Dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.Dir, state} {
		if err := os.Chown(d, int(cfg.UID), int(cfg.GID)); err != nil {
			return nil, err
		}
	}
	args := []string{"sidecar",
		"--node-name", node.Name,
		"--bind", fmt.Sprintf("%s:%d", node.Addr(), AgentPort),
		"--state-dir", state,
		"--metrics-addr", fmt.Sprintf("%s:%d", node.Addr(), SidecarMetricsPort),
	}
	if cfg.GossipKeyFile != "" {
		key, err := os.ReadFile(cfg.GossipKeyFile)
		if err != nil {
			return nil, err
		}
		kf := filepath.Join(cfg.Dir, "gossip.key")
		if err := os.WriteFile(kf, key, 0o400); err != nil {
			return nil, err
		}
		if err := os.Chown(kf, int(cfg.UID), int(cfg.GID)); err != nil {
			return nil, err
		}
		args = append(args, "--gossip-key-file", kf)
	}
	if cfg.Join != nil {
		args = append(args, "--join", fmt.Sprintf("%s:%d", cfg.Join.Addr(), AgentPort))
	}
	args = append(args, cfg.Extra...)
	logf, err := os.OpenFile(filepath.Join(cfg.Dir, "sidecar.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(cfg.Bin, args...)
	s.cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + cfg.Dir}, cfg.Env...)
	s.cmd.Dir = cfg.Dir
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: cfg.UID, Gid: cfg.GID, Groups: []uint32{}},
	}
	if err := startIsolated(node, s.cmd); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start sidecar in %s: %w", node.Name, err)
	}
	cmd, done := s.cmd, s.done
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	return s, nil
}

// startIsolated starts cmd from a thread that has entered node's network
// namespace and a private mount namespace with an empty /dev/net: the
// child inherits both. The thread is never given back to the Go runtime
// (no UnlockOSThread), so it ends with the goroutine and no other code
// runs in those namespaces.
func startIsolated(node *Node, cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			f, err := os.Open(node.Path())
			if err != nil {
				return err
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("enter %s: %w", node.NS, err)
			}
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("new mount namespace: %w", err)
			}
			// Nothing mounted here may reach the machine's namespace.
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("make mounts private: %w", err)
			}
			if err := unix.Mount("tmpfs", "/dev/net", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=4k,mode=0755"); err != nil {
				return fmt.Errorf("hide /dev/net: %w", err)
			}
			return cmd.Start()
		}()
	}()
	return <-errc
}

// ExitCode is the process's exit status once it ended (-1 before).
func (s *Sidecar) ExitCode() int {
	if s.Running() {
		return -1
	}
	return s.cmd.ProcessState.ExitCode()
}

// LogTail is the last few KiB of the sidecar's log.
func (s *Sidecar) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "sidecar.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Get fetches a path of the sidecar's metrics server (/healthz, /metrics)
// from inside its node.
func (s *Sidecar) Get(ctx context.Context, path string) (int, string, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: s.Node.DialContext}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d%s", s.Node.Addr(), SidecarMetricsPort, path), nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}
