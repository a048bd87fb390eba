package cni_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/cni"
)

// Issue 5, test 1: ADD, CHECK and DEL of one pod on one node through
// libcni; the pod reaches its node and back; CHECK notices a missing route;
// after DEL no veth, route or allocation is left, and DEL again (also
// with the pod's netns gone) succeeds.
func TestSingleNodeAddCheckDel(t *testing.T) {
	nd := newLab(t, 1, 1)[0]
	lease := nd.waitReady()
	block := netip.MustParsePrefix(lease.Block)
	list := nd.conflist("1.1.0")
	p := nd.newPodNS("p1")
	nd.mustAdd(p, list)

	if !block.Contains(p.addr) || p.addr == block.Addr() || p.addr.String() == lease.NodeAddress {
		t.Fatalf("pod address %s: want a host address of %s other than the node's %s", p.addr, block, lease.NodeAddress)
	}
	if p.version != "1.1.0" {
		t.Errorf("result cniVersion %q, want 1.1.0", p.version)
	}
	if len(p.host) > 15 || !strings.HasPrefix(p.host, cni.HostVethPrefix) {
		t.Errorf("host veth %q: want %s... of at most 15 characters", p.host, cni.HostVethPrefix)
	}
	if got := nd.allocations(); len(got) != 1 || !strings.HasPrefix(got[p.addr.String()], p.rt.ContainerID) {
		t.Errorf("address store %v: want %s owned by %s", got, p.addr, p.rt.ContainerID)
	}
	if r := nd.routeTo(p.addr); !strings.Contains(r, "dev "+p.host) {
		t.Errorf("node route to %s: %q, want one via %s", p.addr, r, p.host)
	}
	out, err := nd.ns.Run(context.Background(), "ip", "-n", filepath.Base(p.path), "link", "show", "eth0")
	if err != nil || !strings.Contains(out, fmt.Sprintf("mtu %d", lease.MTU)) {
		t.Errorf("pod eth0 should have the agent's MTU %d: %s %v", lease.MTU, out, err)
	}
	// The data path: the node reaches the pod, the pod its node's overlay
	// address, over the default route through the link-local gateway.
	if _, err := nd.ns.Run(context.Background(), "ping", "-c", "1", "-w", "3", p.addr.String()); err != nil {
		t.Errorf("node -> pod: %v", err)
	}
	serveEcho(t, p, 8080)
	if err := echoFromNode(nd, p.addr, 8080, "hello pod"); err != nil {
		t.Errorf("node -> pod TCP: %v", err)
	}
	if out, err := nd.ns.Run(context.Background(), "ip", "netns", "exec", filepath.Base(p.path),
		"ping", "-c", "1", "-w", "3", lease.NodeAddress); err != nil {
		t.Errorf("pod -> node %s: %v %s", lease.NodeAddress, err, out)
	}

	if err := nd.check(p, list); err != nil {
		t.Fatalf("CHECK of a healthy pod: %v", err)
	}
	nd.ns.Run(context.Background(), "ip", "route", "del", p.addr.String()+"/32")
	if err := nd.check(p, list); err == nil {
		t.Errorf("CHECK passed with the node's route to the pod deleted")
	}

	if err := nd.del(p, list); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if nd.linkExists(p.host) {
		t.Errorf("host veth %s still there after DEL", p.host)
	}
	if r := nd.routeTo(p.addr); r != "" {
		t.Errorf("route to %s still there after DEL: %q", p.addr, r)
	}
	if got := nd.allocations(); len(got) != 0 {
		t.Errorf("allocations left after DEL: %v", got)
	}
	if out, err := nd.ns.Run(context.Background(), "ip", "-n", filepath.Base(p.path), "link", "show", "eth0"); err == nil {
		t.Errorf("pod eth0 still there after DEL: %s", out)
	}
	if err := nd.del(p, list); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "del", filepath.Base(p.path)).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	if err := nd.del(p, list); err != nil {
		t.Errorf("DEL with the pod's netns gone: %v", err)
	}
}

func echoFromNode(nd *node, a netip.Addr, port int, msg string) error {
	return echo(nd.ns.Path(), netip.AddrPortFrom(a, uint16(port)).String(), msg)
}

// Issue 5, test 2: 50 ADDs at once on one node get 50 distinct addresses
// (the store's file lock serialises reservations), and 50 DELs leave
// nothing behind.
func TestParallelAddsDistinctAddresses(t *testing.T) {
	nd := newLab(t, 1, 1)[0]
	list := nd.conflist("1.1.0")
	const n = 50
	pods := make([]*pod, n)
	for i := range pods {
		pods[i] = nd.newPodNS(fmt.Sprintf("p%d", i))
	}
	run := func(what string, fn func(*pod) error) {
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, p := range pods {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = fn(p) }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s %s: %v", what, pods[i].name, err)
			}
		}
	}
	run("ADD", func(p *pod) error { return nd.add(p, list) })
	seen := map[netip.Addr]string{}
	for _, p := range pods {
		if prev, dup := seen[p.addr]; dup {
			t.Errorf("%s and %s both got %s", prev, p.name, p.addr)
		}
		seen[p.addr] = p.name
	}
	if got := nd.allocations(); len(got) != n {
		t.Errorf("%d allocations after %d ADDs", len(got), n)
	}
	// Spot-check the data path of the last pod while 49 others share the node.
	if _, err := nd.ns.Run(context.Background(), "ping", "-c", "1", "-w", "3", pods[n-1].addr.String()); err != nil {
		t.Errorf("node -> %s: %v", pods[n-1].name, err)
	}
	run("DEL", func(p *pod) error { return nd.del(p, list) })
	if got := nd.allocations(); len(got) != 0 {
		t.Errorf("allocations left after DELs: %v", got)
	}
	out, _ := nd.ns.Run(context.Background(), "ip", "-o", "link", "show")
	if strings.Contains(out, cni.HostVethPrefix) {
		t.Errorf("weft veths left after DELs:\n%s", out)
	}
	out, _ = nd.ns.Run(context.Background(), "ip", "-4", "route", "show", "scope", "link")
	for _, p := range pods {
		if strings.Contains(out, p.addr.String()+" ") {
			t.Errorf("route to %s left after DEL", p.addr)
		}
	}
}

// Issue 5, test 5: STATUS is ready with the agent running, code 50 (not
// available) with it stopped, and ready again once it is back.
func TestStatusFollowsAgent(t *testing.T) {
	nd := newLab(t, 1, 1)[0]
	list := nd.conflist("1.1.0")
	status := func() error {
		return nd.do(func(ctx context.Context) error { return nd.cni.GetStatusNetworkList(ctx, list) })
	}
	if err := status(); err != nil {
		t.Fatalf("STATUS with the agent running: %v", err)
	}
	// A pod still holding an address of a block the node no longer has
	// (lost in a lease conflict) keeps STATUS not ready until it is gone.
	stale := filepath.Join(nd.dataDir, "100.127.255.5")
	if err := os.MkdirAll(nd.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("ctr-old\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := cniError(status()); code != types.ErrPluginNotAvailable {
		t.Errorf("STATUS with a pod on a lost block: code %d, want %d", code, types.ErrPluginNotAvailable)
	}
	os.Remove(stale)
	if err := status(); err != nil {
		t.Fatalf("STATUS once that pod is gone: %v", err)
	}
	nd.agent.Stop(syscall.SIGTERM)
	err := status()
	if code := cniError(err); code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS with the agent stopped: %v (code %d), want code %d", err, code, types.ErrPluginNotAvailable)
	}
	// ADD asks the runtime to try again later rather than failing hard.
	p := nd.newPodNS("p1")
	if code := cniError(nd.add(p, list)); code != types.ErrTryAgainLater {
		t.Errorf("ADD with the agent stopped: code %d, want %d", code, types.ErrTryAgainLater)
	}
	if got := nd.allocations(); len(got) != 0 {
		t.Errorf("a failed ADD left allocations: %v", got)
	}
	if err := nd.agent.Start(); err != nil {
		t.Fatal(err)
	}
	nd.waitReady()
	if err := status(); err != nil {
		t.Errorf("STATUS with the agent back: %v", err)
	}
}

// An agent that stops to be restarted (--keep-on-exit: the DaemonSet's
// rolling update) leaves a handover note: STATUS stays ready without it for
// the note's grace, so the kubelet keeps the node Ready, while ADD still
// asks to try again later. An expired note counts for nothing, and the new
// agent removes the note once it is ready. Without --keep-on-exit there is
// no note (TestStatusFollowsAgent).
func TestStatusThroughAgentRestart(t *testing.T) {
	nd := newLab(t, 1, 1)[0]
	list := nd.conflist("1.1.0")
	status := func() error {
		return nd.do(func(ctx context.Context) error { return nd.cni.GetStatusNetworkList(ctx, list) })
	}
	note := api.HandoverPath(nd.agent.Socket())
	nd.agent.Stop(syscall.SIGTERM)
	if _, err := os.Stat(note); err == nil {
		t.Fatal("an agent that leaves the mesh left a handover note")
	}
	nd.agent.Args = append(nd.agent.Args, "--keep-on-exit")
	if err := nd.agent.Start(); err != nil {
		t.Fatal(err)
	}
	lease := nd.waitReady()
	nd.agent.Stop(syscall.SIGTERM)
	h, ok := api.ReadHandover(nd.agent.Socket(), time.Now())
	if !ok || h.Block != lease.Block {
		t.Fatalf("handover note %+v (valid %v), want one for block %s", h, ok, lease.Block)
	}
	if err := status(); err != nil {
		t.Errorf("STATUS while the agent restarts: %v, want ready", err)
	}
	p := nd.newPodNS("p1")
	if code := cniError(nd.add(p, list)); code != types.ErrTryAgainLater {
		t.Errorf("ADD while the agent restarts: code %d, want %d", code, types.ErrTryAgainLater)
	}
	// A pod on a block the node does not keep still makes STATUS not ready.
	stale := filepath.Join(nd.dataDir, "100.127.255.5")
	os.MkdirAll(nd.dataDir, 0o755)
	if err := os.WriteFile(stale, []byte("ctr-old\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := cniError(status()); code != types.ErrPluginNotAvailable {
		t.Errorf("STATUS with a pod outside the kept block: code %d, want %d", code, types.ErrPluginNotAvailable)
	}
	os.Remove(stale)
	// Past its grace the note counts for nothing.
	h.Until = time.Now().Add(-time.Second)
	if err := api.WriteHandover(nd.agent.Socket(), h); err != nil {
		t.Fatal(err)
	}
	if code := cniError(status()); code != types.ErrPluginNotAvailable {
		t.Errorf("STATUS with an expired note and no agent: code %d, want %d", code, types.ErrPluginNotAvailable)
	}
	h.Until = time.Now().Add(api.HandoverGrace)
	if err := api.WriteHandover(nd.agent.Socket(), h); err != nil {
		t.Fatal(err)
	}
	if err := nd.agent.Start(); err != nil {
		t.Fatal(err)
	}
	nd.waitReady()
	if _, err := os.Stat(note); err == nil {
		t.Error("the ready agent did not remove the handover note")
	}
	if err := status(); err != nil {
		t.Errorf("STATUS with the new agent ready: %v", err)
	}
}

// An ADD that cannot finish (the pod already has a link named CNI_IFNAME)
// gives its address back and leaves no veth, and the DEL a runtime sends
// after a failed ADD leaves the pod's own link alone.
func TestFailedAddCleansUpAndDelSparesForeignLink(t *testing.T) {
	nd := newLab(t, 1, 1)[0]
	list := nd.conflist("1.1.0")
	p := nd.newPodNS("p1")
	podNS := filepath.Base(p.path)
	if _, err := nd.ns.Run(context.Background(), "ip", "-n", podNS, "link", "add", "eth0", "type", "veth", "peer", "name", "other0"); err != nil {
		t.Fatal(err)
	}
	if err := nd.add(p, list); err == nil {
		t.Fatal("ADD succeeded although the pod already has an eth0")
	}
	if got := nd.allocations(); len(got) != 0 {
		t.Errorf("failed ADD kept allocations: %v", got)
	}
	out, _ := nd.ns.Run(context.Background(), "ip", "-o", "link", "show")
	if strings.Contains(out, cni.HostVethPrefix) {
		t.Errorf("failed ADD left a host veth:\n%s", out)
	}
	if err := nd.del(p, list); err != nil {
		t.Fatalf("DEL after a failed ADD: %v", err)
	}
	if _, err := nd.ns.Run(context.Background(), "ip", "-n", podNS, "link", "show", "eth0"); err != nil {
		t.Errorf("DEL removed the pod's own eth0: %v", err)
	}
}
