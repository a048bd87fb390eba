package netlab

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/agent/membership"
)

// This file is what a container runtime does on a lab node: pods are network
// namespaces of their own (weft-<lab id>-<node>-<pod>), attached and detached
// by calling the CNI plugin through libcni, as containerd and CRI-O do.

// RuntimeConfig says how a node's runtime calls CNI.
type RuntimeConfig struct {
	// PluginDir is CNI_PATH: a directory holding the weft plugin, named weft
	// (the weft binary itself, or a symlink to it).
	PluginDir string
	// AgentSocket is the node agent's local API socket, written into the
	// conflist as agentSocket.
	AgentSocket string
	// Dir holds the node's pod address store (Dir/networks/weft) and
	// libcni's cache (Dir/cache); it is created. Lab nodes share one
	// filesystem, so every node needs its own.
	Dir string
	// CNIVersion of the conflist; "" means 1.1.0.
	CNIVersion string
}

// Runtime attaches pods to one lab node through the CNI plugin. Close
// detaches (DEL) every pod still attached and removes its namespace.
type Runtime struct {
	Node *Node
	lab  *Lab
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList

	mu   sync.Mutex
	pods []*Pod
}

// Pod is a pod sandbox: a network namespace attached to its node by the
// plugin. The embedded Node is the pod's own namespace, so Do, Listen,
// DialContext, Command and Run work inside the pod; its Underlay holds the
// pod's address as the ADD result gave it.
type Pod struct {
	Node
	// Host is the node the pod runs on.
	Host *Node
	// ContainerID is the ID the runtime passed to the plugin.
	ContainerID string
	// HostVeth is the host end of the pod's veth, in the node's namespace.
	HostVeth string
	rt       *libcni.RuntimeConf
}

// NewRuntime prepares node to run pods with the weft plugin.
func (l *Lab) NewRuntime(node *Node, cfg RuntimeConfig) (*Runtime, error) {
	if cfg.PluginDir == "" || cfg.AgentSocket == "" || cfg.Dir == "" {
		return nil, errors.New("netlab runtime: PluginDir, AgentSocket and Dir are required")
	}
	if cfg.CNIVersion == "" {
		cfg.CNIVersion = "1.1.0"
	}
	dataDir := filepath.Join(cfg.Dir, "networks", "weft")
	cacheDir := filepath.Join(cfg.Dir, "cache")
	for _, d := range []string{dataDir, cacheDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("netlab runtime: %w", err)
		}
	}
	b, err := json.Marshal(map[string]any{
		"cniVersion": cfg.CNIVersion, "name": "weft",
		"plugins": []map[string]any{{"type": "weft", "agentSocket": cfg.AgentSocket, "dataDir": dataDir}},
	})
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("netlab runtime: conflist: %w", err)
	}
	// The exec is given explicitly: libcni fills in a nil one lazily,
	// without a lock, which races when ADDs run in parallel.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return &Runtime{
		Node: node, lab: l, list: list,
		cni: libcni.NewCNIConfigWithCacheDir([]string{cfg.PluginDir}, cacheDir, exec),
	}, nil
}

// PodNS is the namespace name of pod `name` on node.
func (l *Lab) PodNS(node *Node, name string) string {
	return NamePrefix + l.ID + "-" + node.Name + "-" + name
}

// AddPod creates the namespace of pod `name` (p1, p2, ...) and runs ADD for
// it. The plugin process starts in the node's namespace, as a runtime on
// the node would start it. On error nothing of the pod is left.
func (r *Runtime) AddPod(ctx context.Context, name string) (*Pod, error) {
	nsName := r.lab.PodNS(r.Node, name)
	p := &Pod{
		Node:        Node{Name: r.Node.Name + "-" + name, NS: nsName},
		Host:        r.Node,
		ContainerID: nsName,
	}
	p.rt = &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: p.Path(), IfName: "eth0"}
	if err := addNetns(ctx, nsName); err != nil {
		return nil, err
	}
	// A runtime brings the sandbox's loopback up (containerd's loopback
	// plugin); the weft plugin only deals with eth0.
	err := ipBatch(ctx, nsName, []string{"link set lo up"})
	if err == nil {
		err = r.add(ctx, p)
	}
	if err != nil {
		r.del(p)
		delNetns(nsName)
		return nil, fmt.Errorf("netlab: ADD pod %s on %s: %w", name, r.Node.Name, err)
	}
	r.mu.Lock()
	r.pods = append(r.pods, p)
	r.mu.Unlock()
	return p, nil
}

func (r *Runtime) add(ctx context.Context, p *Pod) error {
	return r.Node.Do(func() error {
		res, err := r.cni.AddNetworkList(ctx, r.list, p.rt)
		if err != nil {
			return err
		}
		cur, err := current.NewResultFromResult(res)
		if err != nil {
			return err
		}
		for _, ipc := range cur.IPs {
			if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() {
				ones, _ := ipc.Address.Mask.Size()
				p.Underlay = netip.PrefixFrom(a.Unmap(), ones)
			}
		}
		for _, i := range cur.Interfaces {
			if i.Sandbox == "" {
				p.HostVeth = i.Name
			}
		}
		if !p.Underlay.IsValid() || p.HostVeth == "" {
			return fmt.Errorf("ADD result without an IPv4 address or host interface: %+v", cur)
		}
		return nil
	})
}

// del runs DEL for the pod; DEL is idempotent, so it also undoes a
// half-done ADD.
func (r *Runtime) del(p *Pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.Node.Do(func() error { return r.cni.DelNetworkList(ctx, r.list, p.rt) })
}

// DelPod runs DEL for the pod and removes its namespace.
func (r *Runtime) DelPod(p *Pod) error {
	r.mu.Lock()
	for i, q := range r.pods {
		if q == p {
			r.pods = append(r.pods[:i], r.pods[i+1:]...)
			break
		}
	}
	r.mu.Unlock()
	var errs []error
	if err := r.del(p); err != nil {
		errs = append(errs, fmt.Errorf("netlab: DEL pod %s: %w", p.Name, err))
	}
	errs = append(errs, delNetns(p.NS))
	return errors.Join(errs...)
}

// Pods lists the pods attached through r.
func (r *Runtime) Pods() []*Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Pod(nil), r.pods...)
}

// Close detaches every pod still attached, newest first, and removes their
// namespaces. Call it before the node's agent stops: DEL asks nothing of
// the agent, but a runtime would.
func (r *Runtime) Close() error {
	var errs []error
	pods := r.Pods()
	for i := len(pods) - 1; i >= 0; i-- {
		errs = append(errs, r.DelPod(pods[i]))
	}
	return errors.Join(errs...)
}

// WaitLease polls the agent at socket until it hands out a lease (what ADD
// needs), or ctx ends; without a deadline on ctx it gives up after
// leaseWait.
func WaitLease(ctx context.Context, socket string) (api.Lease, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, leaseWait)
		defer cancel()
	}
	var last error
	for {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		l, err := api.NewClient(socket).Lease(c)
		cancel()
		switch {
		case err != nil:
			last = err
		case !l.Ready:
			last = errors.New(l.Reason)
		default:
			return l, nil
		}
		select {
		case <-ctx.Done():
			return l, fmt.Errorf("agent at %s: no lease: %w (last: %v)", socket, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// leaseWait bounds WaitLease when its caller gave no deadline.
const leaseWait = 2 * time.Minute

// labNamespaces lists the namespaces whose name starts with prefix.
func labNamespaces(prefix string) []string {
	ents, err := os.ReadDir(NetnsDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// MeshConfig describes a weft cluster on a lab: an agent on every node and
// a runtime that adds pods through the plugin.
type MeshConfig struct {
	// Bin is the weft binary: agent and CNI plugin.
	Bin string
	// Dir holds everything on disk: the gossip key, the plugin dir, each
	// node's agent state, socket, log and pod address store. It is created;
	// the caller removes it.
	Dir string
	// Mode is the agents' --mode; "" lets each agent detect.
	Mode string
	// Extra flags for every agent.
	Extra []string
}

// Mesh is a weft cluster on a lab.
type Mesh struct {
	Lab      *Lab
	Agents   []*Agent
	Runtimes []*Runtime
	// KeyFile is the generated gossip key.
	KeyFile string
}

// StartMesh starts an agent on every node of the lab, each joining the
// first, with a freshly generated gossip key, and a runtime per node. It
// does not wait: see WaitReady. On error what was started is stopped.
func (l *Lab) StartMesh(cfg MeshConfig) (*Mesh, error) {
	m := &Mesh{Lab: l}
	err := m.start(cfg)
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Mesh) start(cfg MeshConfig) error {
	pluginDir := filepath.Join(cfg.Dir, "cni-bin")
	if err := os.MkdirAll(pluginDir, 0o700); err != nil {
		return err
	}
	if err := os.Symlink(cfg.Bin, filepath.Join(pluginDir, "weft")); err != nil {
		return fmt.Errorf("netlab mesh: plugin: %w", err)
	}
	var err error
	if m.KeyFile, err = WriteGossipKey(cfg.Dir); err != nil {
		return err
	}
	extra := append([]string(nil), cfg.Extra...)
	if cfg.Mode != "" {
		extra = append(extra, "--mode", cfg.Mode)
	}
	for i, n := range m.Lab.Nodes {
		var join *Node
		if i > 0 {
			join = m.Lab.Nodes[0]
		}
		a, err := m.Lab.StartAgent(n, AgentConfig{
			Bin: cfg.Bin, Dir: filepath.Join(cfg.Dir, n.Name), GossipKeyFile: m.KeyFile, Join: join, Extra: extra,
		})
		if err != nil {
			return err
		}
		m.Agents = append(m.Agents, a)
		rt, err := m.Lab.NewRuntime(n, RuntimeConfig{
			PluginDir: pluginDir, AgentSocket: a.Socket(), Dir: filepath.Join(cfg.Dir, n.Name, "cni"),
		})
		if err != nil {
			return err
		}
		m.Runtimes = append(m.Runtimes, rt)
	}
	return nil
}

// WaitReady waits until every agent hands out a lease.
func (m *Mesh) WaitReady(ctx context.Context) error {
	for _, a := range m.Agents {
		if _, err := WaitLease(ctx, a.Socket()); err != nil {
			return fmt.Errorf("%s: %w\n%s", a.Node.Name, err, a.LogTail())
		}
	}
	return nil
}

// Close detaches every pod, then stops the agents (SIGTERM: they leave the
// mesh and close their devices) all at once.
func (m *Mesh) Close() error {
	var errs []error
	for _, rt := range m.Runtimes {
		errs = append(errs, rt.Close())
	}
	var wg sync.WaitGroup
	for _, a := range m.Agents {
		wg.Add(1)
		go func() { defer wg.Done(); a.Stop(syscall.SIGTERM) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// WriteGossipKey writes a new gossip key to dir/gossip.key (mode 0600, the
// format --gossip-key-file reads) and returns the file's path.
func WriteGossipKey(dir string) (string, error) {
	k, err := membership.GenerateGossipKey()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		return "", err
	}
	return path, nil
}
