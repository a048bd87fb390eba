package cni_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/internal/harness/gobuild"
	"github.com/weftnet/weft/internal/netlab"
)

// weftBin is the weft binary, built once; cniBinDir is the CNI_PATH the
// tests hand libcni: weft plus Debian's plugins (from /usr/lib/cni).
var weftBin, cniBinDir string

func TestMain(m *testing.M) {
	code := func() int {
		flag.Parse()
		if os.Geteuid() == 0 && !testing.Short() {
			bin, cleanup, err := gobuild.WeftTemp("weft-cni-test-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer cleanup()
			weftBin = bin
			dir := filepath.Dir(bin)
			cniBinDir = filepath.Join(dir, "cni-bin")
			if err := os.MkdirAll(cniBinDir, 0o755); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			if err := os.Symlink(weftBin, filepath.Join(cniBinDir, "weft")); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			for _, p := range []string{"portmap", "bandwidth", "loopback"} {
				if _, err := os.Stat(filepath.Join(debianCNIDir, p)); err == nil {
					os.Symlink(filepath.Join(debianCNIDir, p), filepath.Join(cniBinDir, p))
				}
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// debianCNIDir is where Debian's containernetworking-plugins installs.
const debianCNIDir = "/usr/lib/cni"

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths and runs weft agents")
	}
	if testing.Short() {
		t.Skip("lab test with real agent and plugin processes; runs without -short")
	}
}

// node is a lab node with a running `weft agent` and what a container
// runtime on it would have: a CNI cache dir and a libcni handle.
type node struct {
	t       testing.TB
	lab     *netlab.Lab
	ns      *netlab.Node
	agent   *netlab.Agent
	dataDir string
	cache   string
	cni     *libcni.CNIConfig
}

// newLab builds a lab of n nodes with an agent on each of the first
// `agents` of them; the agents join the first.
func newLab(t testing.TB, n, agents int) []*node {
	t.Helper()
	needRoot(t)
	lab, err := netlab.New(context.Background(), netlab.Config{Nodes: n})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	key := writeGossipKey(t)
	var out []*node
	for i, ln := range lab.Nodes {
		nd := &node{t: t, lab: lab, ns: ln,
			dataDir: filepath.Join(t.TempDir(), "networks", "weft"),
			cache:   t.TempDir(),
		}
		nd.cni = newCNIConfig([]string{cniBinDir}, nd.cache)
		if i < agents {
			var join *netlab.Node
			if i > 0 {
				join = lab.Nodes[0]
			}
			a, err := lab.StartAgent(ln, netlab.AgentConfig{
				Bin: weftBin, Dir: filepath.Join(t.TempDir(), ln.Name), GossipKeyFile: key, Join: join,
				Extra: []string{"--gossip-profile", "local"},
			})
			if err != nil {
				t.Fatal(err)
			}
			nd.agent = a
			t.Cleanup(func() {
				a.Stop(syscall.SIGTERM)
				if t.Failed() {
					t.Logf("log of agent on %s:\n%s", ln.Name, a.LogTail())
				}
			})
		}
		out = append(out, nd)
	}
	for _, nd := range out[:agents] {
		nd.waitReady()
	}
	return out
}

// newCNIConfig is libcni as a runtime holds it. The exec is given
// explicitly: libcni fills in a nil one lazily, without a lock, which races
// when ADDs run in parallel.
func newCNIConfig(path []string, cacheDir string) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(path, cacheDir, &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: os.Stderr},
		PluginDecoder: version.PluginDecoder{},
	})
}

func writeGossipKey(t testing.TB) string {
	t.Helper()
	path, err := netlab.WriteGossipKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// waitReady waits until the agent hands out its lease.
func (nd *node) waitReady() api.Lease {
	nd.t.Helper()
	var l api.Lease
	eventually(nd.t, 30*time.Second, nd.ns.Name+" agent ready", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		if l, err = api.NewClient(nd.agent.Socket()).Lease(ctx); err != nil {
			return err
		}
		if !l.Ready {
			return errors.New(l.Reason)
		}
		return nil
	})
	return l
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, timeout, err)
}

// conflist is the network as a runtime would load it from a file.
func (nd *node) conflist(cniVersion string, chain ...string) *libcni.NetworkConfigList {
	nd.t.Helper()
	plugins := []map[string]any{{"type": "weft", "agentSocket": nd.agent.Socket(), "dataDir": nd.dataDir}}
	for _, c := range chain {
		switch c {
		case "portmap":
			plugins = append(plugins, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}})
		default:
			plugins = append(plugins, map[string]any{"type": c})
		}
	}
	b, err := json.Marshal(map[string]any{"cniVersion": cniVersion, "name": "weft", "plugins": plugins})
	if err != nil {
		nd.t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		nd.t.Fatal(err)
	}
	return list
}

// pod is a network namespace standing in for a pod sandbox on a node.
type pod struct {
	name   string
	path   string
	rt     *libcni.RuntimeConf
	result *current.Result
	// version is the cniVersion of the result as the last plugin printed it.
	version string
	addr    netip.Addr
	host    string // host-side veth
}

// newPodNS makes a pod namespace named weft-<lab id>-<name>, so that
// netlab.Cleanup finds it if the test dies, and deletes it at cleanup.
func (nd *node) newPodNS(name string) *pod {
	nd.t.Helper()
	nsName := netlab.NamePrefix + nd.lab.ID + "-" + name
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		nd.t.Fatalf("ip netns add %s: %v: %s", nsName, err, out)
	}
	p := &pod{name: name, path: filepath.Join(netlab.NetnsDir, nsName)}
	nd.t.Cleanup(func() { exec.Command("ip", "netns", "del", nsName).Run() })
	p.rt = &libcni.RuntimeConf{ContainerID: "ctr-" + nd.lab.ID + "-" + name, NetNS: p.path, IfName: "eth0"}
	return p
}

// do runs a libcni call the way a runtime on the node would: from the
// node's network namespace, so the plugin process it execs starts there
// (a child inherits the netns of the thread that forks it, and Do keeps
// the goroutine on that thread).
func (nd *node) do(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return nd.ns.Do(func() error { return fn(ctx) })
}

// add runs ADD for the pod through libcni.
func (nd *node) add(p *pod, list *libcni.NetworkConfigList) error {
	return nd.do(func(ctx context.Context) error {
		r, err := nd.cni.AddNetworkList(ctx, list, p.rt)
		if err != nil {
			return err
		}
		p.version = r.Version()
		res, err := current.NewResultFromResult(r)
		if err != nil {
			return err
		}
		p.result = res
		for _, ipc := range res.IPs {
			if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
				p.addr = a.Unmap()
			}
		}
		for _, i := range res.Interfaces {
			if i.Sandbox == "" {
				p.host = i.Name
			}
		}
		if !p.addr.IsValid() || p.host == "" {
			return fmt.Errorf("ADD result without address or host interface: %+v", res)
		}
		return nil
	})
}

func (nd *node) mustAdd(p *pod, list *libcni.NetworkConfigList) {
	nd.t.Helper()
	if err := nd.add(p, list); err != nil {
		nd.t.Fatalf("ADD %s: %v", p.name, err)
	}
}

func (nd *node) del(p *pod, list *libcni.NetworkConfigList) error {
	return nd.do(func(ctx context.Context) error { return nd.cni.DelNetworkList(ctx, list, p.rt) })
}

func (nd *node) check(p *pod, list *libcni.NetworkConfigList) error {
	return nd.do(func(ctx context.Context) error { return nd.cni.CheckNetworkList(ctx, list, p.rt) })
}

// allocations lists the address store: file name (the address) -> content.
func (nd *node) allocations() map[string]string {
	nd.t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(nd.dataDir)
	if errors.Is(err, os.ErrNotExist) {
		return out
	}
	if err != nil {
		nd.t.Fatal(err)
	}
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(nd.dataDir, e.Name()))
		out[e.Name()] = string(b)
	}
	return out
}

// linkExists reports whether the node has a link of that name.
func (nd *node) linkExists(name string) bool {
	nd.t.Helper()
	_, err := nd.ns.Run(context.Background(), "ip", "link", "show", "dev", name)
	return err == nil
}

// routeTo returns the node's routes to a /32, "" when there are none.
func (nd *node) routeTo(a netip.Addr) string {
	nd.t.Helper()
	out, err := nd.ns.Run(context.Background(), "ip", "-4", "route", "show", "exact", a.String()+"/32")
	if err != nil {
		nd.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// cniError returns the spec error code of a libcni error, or 0.
func cniError(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// serveEcho listens on TCP port in the pod's namespace and echoes each
// connection's first line back.
func serveEcho(t testing.TB, p *pod, port int) {
	t.Helper()
	var l net.Listener
	err := ns.WithNetNSPath(p.path, func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(c, io.LimitReader(c, 1<<20))
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
}

// echo connects to addr from inside netnsPath, sends msg and expects it back.
func echo(netnsPath, addr, msg string) error {
	var c net.Conn
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != msg {
		return fmt.Errorf("echo from %s: got %q, want %q", addr, b, msg)
	}
	return nil
}
