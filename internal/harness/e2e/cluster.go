package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/netlab"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Config describes a lab cluster.
type Config struct {
	// Nodes is how many worker nodes Up starts.
	Nodes int
	// Spare is how many more lab namespaces Up makes for StartNode later.
	Spare int
	// BinDir holds kube-apiserver, kube-controller-manager, kube-scheduler,
	// kubelet, kubectl, containerd, containerd-shim-runc-v2 and ctr.
	BinDir string
	// Images is the docker-archive every node imports (BuildImages).
	Images string
	// Dir holds everything the cluster writes; Down removes what is in it.
	Dir string
	// Logf, if set, gets progress lines.
	Logf func(format string, args ...any)
}

// Cluster is a running lab cluster: the control plane on lab node n1, the
// Kubernetes nodes on n2, n3, ...
type Cluster struct {
	// Lab is the network lab under the cluster.
	Lab *netlab.Lab
	// CP is the control-plane namespace.
	CP *netlab.Node
	// Nodes are the Kubernetes nodes, started or not.
	Nodes []*Node
	// Dir is Config.Dir.
	Dir string
	// Config is an admin's client configuration; it dials from CP.
	Config *rest.Config
	// Client is an admin's client.
	Client kubernetes.Interface
	// Kubeconfig is an admin kubeconfig (use it from CP's namespace).
	Kubeconfig string
	// CAFile verifies the apiserver.
	CAFile string
	// AuditLog holds the service accounts' requests.
	AuditLog string

	// CPAgent is weft's agent on the control-plane machine (StartCPAgent),
	// nil when none runs.
	CPAgent *netlab.Agent

	cfg        Config
	id         string // the lab's ID, in every namespace and cgroup name
	adminToken string
	nodeTokens map[string]string
	// mountpoints are the node paths Up created on the shared filesystem
	// (deepest last) for the per-node bind mounts; Down removes them.
	mountpoints []string
	// shared are the entries of the shared filesystem's system directories
	// before Up (sharedDirs); Leftovers reports any entry added since.
	shared map[string]bool

	mu    sync.Mutex
	procs []*proc
}

// proc is a process the cluster started and the channel closed when it exits.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// stop sends sig and waits for the process, SIGKILL after 15 s.
func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	netlab.StopProcess(p.cmd.Process, p.done, sig, 15*time.Second)
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// nodeName is the Kubernetes name of lab node i (1-based; n1 is the
// control plane).
func nodeName(i int) string { return fmt.Sprintf("node%d", i) }

// Up builds the lab, the control plane and cfg.Nodes nodes, and waits until
// every node is registered. On error it tears down what it made.
func Up(ctx context.Context, cfg Config) (c *Cluster, err error) {
	if cfg.Nodes < 1 {
		return nil, fmt.Errorf("e2e: %d nodes: want at least 1", cfg.Nodes)
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	lab, err := netlab.New(ctx, netlab.Config{Nodes: 1 + cfg.Nodes + cfg.Spare})
	if err != nil {
		return nil, err
	}
	c = &Cluster{Lab: lab, CP: lab.Nodes[0], Dir: cfg.Dir, cfg: cfg, id: lab.ID, nodeTokens: map[string]string{},
		shared: sharedEntries()}
	defer func() {
		if err != nil {
			if derr := c.Down(); derr != nil {
				err = errors.Join(err, fmt.Errorf("tear down: %w", derr))
			}
			c = nil
		}
	}()
	if err := c.makeMountpoints(); err != nil {
		return c, err
	}
	start := time.Now()
	if err := c.startControlPlane(ctx); err != nil {
		return c, fmt.Errorf("control plane: %w", err)
	}
	cfg.Logf("control plane ready in %v", time.Since(start).Round(time.Millisecond))
	for i, ln := range lab.Nodes[1:] {
		c.Nodes = append(c.Nodes, &Node{Name: nodeName(i + 2), Net: ln, cluster: c})
	}
	for _, n := range c.Nodes[:cfg.Nodes] {
		if err := n.Start(ctx); err != nil {
			return c, err
		}
	}
	for _, n := range c.Nodes[:cfg.Nodes] {
		if err := n.WaitRegistered(ctx, 120*time.Second); err != nil {
			return c, err
		}
	}
	cfg.Logf("%d nodes registered in %v", cfg.Nodes, time.Since(start).Round(time.Millisecond))
	return c, nil
}

// startProcess starts bin in the network namespace at netns with its output
// in logPath. Down stops it.
func (c *Cluster) startProcess(ctx context.Context, netns, name, bin string, args []string, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("nsenter", append([]string{"--net=" + netns, "--", bin}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "PATH="+c.cfg.BinDir+":"+os.Getenv("PATH"))
	// Its own process group, so a ^C reaches only the test, whose teardown
	// stops this; and killed if the test process dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// Kubectl runs kubectl with the admin kubeconfig from the control-plane
// namespace and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.KubectlInput(ctx, "", args...)
}

// KubectlCommand is kubectl with the admin kubeconfig, run from the
// control-plane namespace, for a caller that wants its pipes.
func (c *Cluster) KubectlCommand(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + c.CP.Path(), "--",
		filepath.Join(c.cfg.BinDir, "kubectl"), "--kubeconfig=" + c.Kubeconfig}, args...)...)
}

// KubectlInput is Kubectl with stdin.
func (c *Cluster) KubectlInput(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := c.KubectlCommand(ctx, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Down stops every node and control-plane process the cluster started,
// removes its cgroups, mount points and namespaces. Calling it twice is fine.
func (c *Cluster) Down() error {
	var errs []error
	for _, n := range c.Nodes {
		errs = append(errs, n.Kill())
	}
	c.StopCPAgent()
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	// Newest first: the scheduler and controllers before the apiserver,
	// the apiserver before etcd.
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(syscall.SIGTERM)
	}
	for i := len(c.mountpoints) - 1; i >= 0; i-- {
		// Only if empty: never remove what someone else put there since.
		if err := os.Remove(c.mountpoints[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove mount point %s: %w", c.mountpoints[i], err))
		}
	}
	c.mountpoints = nil
	if c.Lab != nil {
		errs = append(errs, c.Lab.Close())
		c.Lab = nil
	}
	return errors.Join(errs...)
}

// nodeMounts are the host paths each node gets a private directory over:
// what kubelet, containerd, the CNI plugin and weft keep on a node.
var nodeMounts = []string{
	"/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni",
	"/run/weft", "/var/lib/weft", "/var/run/wireguard",
	"/var/lib/kubelet", "/var/log/pods", "/var/log/containers",
	"/var/lib/containerd", "/run/containerd",
}

// makeMountpoints creates the mount points that do not exist yet, and
// remembers each directory it created so that Down removes exactly those.
func (c *Cluster) makeMountpoints() error {
	for _, p := range nodeMounts {
		var missing []string
		for d := p; d != "/"; d = filepath.Dir(d) {
			// Lstat: /var/run is a symlink to /run.
			if _, err := os.Lstat(d); err == nil {
				break
			}
			missing = append([]string{d}, missing...)
		}
		for _, d := range missing {
			if err := os.Mkdir(d, 0o755); err != nil {
				return fmt.Errorf("mount point %s: %w", d, err)
			}
			c.mountpoints = append(c.mountpoints, d)
		}
	}
	return nil
}

// StartCPAgent runs weft's agent on the control-plane machine, as a
// self-hosted cluster's control-plane node runs the agent DaemonSet's pod:
// it joins the mesh through join, leases a block like any node, and gives
// the apiserver routes to every pod (the injection webhook is a pod).
// extra are more agent flags (those the DaemonSet's agents run with).
func (c *Cluster) StartCPAgent(weftBin, gossipKeyFile string, join *netlab.Node, extra ...string) error {
	if c.CPAgent != nil && c.CPAgent.Running() {
		return errors.New("e2e: the control plane's agent already runs")
	}
	a, err := c.Lab.StartAgent(c.CP, netlab.AgentConfig{
		Bin:           weftBin,
		Dir:           filepath.Join(c.Dir, "cp-agent"),
		GossipKeyFile: gossipKeyFile,
		Join:          join,
		Extra:         extra,
	})
	c.CPAgent = a
	return err
}

// StopCPAgent stops the control plane's agent with a graceful leave (its
// block is free at once) and removes its state, as an uninstall does on a
// node. Stopping none does nothing.
func (c *Cluster) StopCPAgent() {
	a := c.CPAgent
	if a == nil {
		return
	}
	a.Stop(syscall.SIGTERM)
	// Its UAPI socket is on the shared filesystem's /var/run/wireguard.
	os.Remove(filepath.Join("/var/run/wireguard", a.Interface()+".sock"))
	os.RemoveAll(a.Dir)
	c.CPAgent = nil
}

// Leftovers lists what of the cluster is still on the machine: its
// network namespaces, cgroups and mounts. After Down it must be empty.
func (c *Cluster) Leftovers() []string {
	var left []string
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/weft-e2e-" + c.id + "-*")
	for _, d := range cgs {
		left = append(left, "cgroup "+d)
	}
	if ents, err := os.ReadDir(netlab.NetnsDir); err == nil {
		for _, e := range ents {
			if strings.Contains(e.Name(), c.id) {
				left = append(left, "netns "+e.Name())
			}
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if c.Dir != "" && strings.Contains(l, c.Dir) {
				left = append(left, "mount "+l)
			}
		}
	}
	for _, p := range c.mountpoints {
		left = append(left, "mount point "+p)
	}
	for p := range sharedEntries() {
		if c.shared != nil && !c.shared[p] {
			left = append(left, "new on the shared filesystem: "+p)
		}
	}
	sort.Strings(left)
	return left
}

// sharedDirs are the system directories the nodes share with the machine
// (beyond nodeMounts): a node's runtime must not leave anything in them,
// as containerd's NRI socket in /run/nri once did.
var sharedDirs = []string{"/run", "/etc", "/opt", "/var/lib", "/var/log"}

// sharedEntries lists the entries of sharedDirs.
func sharedEntries() map[string]bool {
	m := map[string]bool{}
	for _, d := range sharedDirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			m[filepath.Join(d, e.Name())] = true
		}
	}
	return m
}
