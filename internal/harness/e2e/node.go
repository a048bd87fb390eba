package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/harness/k8stest"
	"github.com/weftnet/weft/internal/netlab"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Node is one Kubernetes node: containerd and kubelet in a lab network
// namespace and in mount, UTS and PID namespaces of their own. The PID
// namespace is what makes Kill complete: when its first process dies the
// kernel kills every other one in it, the containers' shims and the
// containers included, and with the last of them the mount namespace and
// every mount made in it go too.
type Node struct {
	// Name is the Kubernetes node name.
	Name string
	// Net is the node's lab namespace.
	Net *netlab.Node
	// Dir holds the node's files: Dir/fs/<path> is the node's <path> for
	// each of nodeMounts, and the logs.
	Dir string

	cluster *Cluster
	proc    *proc
	cgroups []string
}

// HostPath is where the node's path p (one of nodeMounts or below) is on
// the test's filesystem.
func (n *Node) HostPath(p string) string {
	for _, m := range nodeMounts {
		if p == m || strings.HasPrefix(p, m+"/") {
			return filepath.Join(n.Dir, "fs", mountDirName(m), strings.TrimPrefix(p, m))
		}
	}
	return ""
}

func mountDirName(p string) string { return strings.ReplaceAll(strings.Trim(p, "/"), "/", "-") }

// cgroupRoot is the node's kubelet cgroupRoot, one per node so that the
// kubelets' pod cgroups never meet.
func (n *Node) cgroupRoot() string { return "/weft-e2e-" + n.cluster.Lab.ID + "-" + n.Name }

// Start writes the node's configuration and starts it. A killed node can
// start again (its files stay).
func (n *Node) Start(ctx context.Context) error {
	c := n.cluster
	n.Dir = filepath.Join(c.Dir, n.Name)
	for _, m := range nodeMounts {
		if err := os.MkdirAll(filepath.Join(n.Dir, "fs", mountDirName(m)), 0o755); err != nil {
			return err
		}
	}
	if err := n.makeCgroups(); err != nil {
		return err
	}
	tok, ok := c.nodeTokens[n.Name]
	if !ok {
		return fmt.Errorf("node %s: no token", n.Name)
	}
	if err := writeKubeconfig(filepath.Join(n.Dir, "kubelet.kubeconfig"), c.Config.Host, c.CAFile, tok); err != nil {
		return err
	}
	files := map[string]string{
		"containerd.toml": containerdConfig(),
		"kubelet.yaml":    kubeletConfig(n.cgroupRoot()),
		"node.sh":         nodeScript,
		// kubelet sets these host-wide sysctls unless they already hold
		// the values it wants; the node sees these files over them, so the
		// machine's own settings stay untouched.
		"sysctl-overcommit_memory": "1\n",
		"sysctl-panic":             "10\n",
		"sysctl-panic_on_oops":     "1\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(n.Dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	args := []string{
		"--mount", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private",
		"/bin/sh", filepath.Join(n.Dir, "node.sh"),
		n.Dir, n.Name, n.Net.Addr().String(), c.cfg.BinDir, c.cfg.Images, strings.Join(nodeMounts, " "),
	}
	p, err := c.startProcess(ctx, n.Net.Path(), "node "+n.Name, "unshare", args, filepath.Join(n.Dir, "node.log"))
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// Running reports whether the node's processes run.
func (n *Node) Running() bool { return n.proc != nil && n.proc.running() }

// Kill ends every process of the node at once (as a power cut would) and
// removes its cgroups. Its files stay for Start.
func (n *Node) Kill() error {
	if n.proc != nil {
		n.proc.stop(syscall.SIGKILL)
	}
	return n.removeCgroups()
}

// Log is the end of one of the node's logs (node, containerd, kubelet).
func (n *Node) Log(name string) string { return k8stest.Tail(filepath.Join(n.Dir, name+".log")) }

// WaitRegistered waits until the node's kubelet registered its Node.
func (n *Node) WaitRegistered(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := n.cluster.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); err == nil {
			return nil
		}
		if !n.Running() {
			return fmt.Errorf("node %s exited before it registered:\n%s\ncontainerd:\n%s\nkubelet:\n%s", n.Name, n.Log("node"), n.Log("containerd"), n.Log("kubelet"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("node %s not registered after %v; kubelet:\n%s", n.Name, timeout, n.Log("kubelet"))
}

// Ready reports whether the node's Ready condition is True.
func Ready(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// cgroupHierarchies are the cgroup v1 hierarchies kubelet's cgroupfs driver
// uses (and that this machine mounts), and on a hybrid machine the v2 tree
// ("unified"), where runc makes the pods' cgroups too.
func cgroupHierarchies() []string {
	var hs []string
	for _, h := range []string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids", "systemd", "hugetlb", "net_cls", "net_prio", "perf_event", "misc", "rdma", "unified"} {
		p := filepath.Join("/sys/fs/cgroup", h)
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			hs = append(hs, p)
		}
	}
	return hs
}

// makeCgroups creates the node's cgroupRoot in every hierarchy (kubelet
// wants it to exist). cpuset children start with no CPUs and no memory
// nodes: copy the parent's.
func (n *Node) makeCgroups() error {
	for _, h := range cgroupHierarchies() {
		d := h + n.cgroupRoot()
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		n.cgroups = append(n.cgroups, d)
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %s: %w", d, f, err)
				}
			}
		}
	}
	return nil
}

// removeCgroups removes the node's cgroups, deepest first, waiting (at
// most 30 s) for the killed processes to leave them.
func (n *Node) removeCgroups() error {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for {
		last = nil
		for _, d := range n.cgroups {
			if err := removeTree(d); err != nil {
				last = err
			}
		}
		if last == nil {
			n.cgroups = nil
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: cgroups: %w", n.Name, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// removeTree removes a cgroup directory and its children (rmdir only:
// cgroupfs directories are removed empty of children, their files go with
// them).
func removeTree(d string) error {
	ents, err := os.ReadDir(d)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeTree(filepath.Join(d, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("rmdir %s: %w", d, err)
	}
	return nil
}

// InitPID is the pid (in the test's PID namespace) of the node's first
// process, whose namespaces are the node's: `nsenter --target` it for a
// shell on the node. 0 when the node does not run.
func (n *Node) InitPID() int {
	if !n.Running() {
		return 0
	}
	// nsenter execs unshare in place; unshare --fork's one child is the
	// node's pid 1.
	pid := n.proc.cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	var child int
	if _, err := fmt.Sscan(string(b), &child); err != nil {
		return 0
	}
	return child
}
