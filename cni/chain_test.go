package cni_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// Issue 5, test 3: weft chained with Debian's portmap in a 1.0.0 conflist
// (Debian's plugins speak CNI up to 1.0.0): a hostPort on the node's
// underlay address reaches the pod from another lab node, and DEL removes
// the mapping again.
func TestChainPortmapHostPort(t *testing.T) {
	if _, err := os.Stat(filepath.Join(debianCNIDir, "portmap")); err != nil {
		t.Skipf("needs Debian's containernetworking-plugins (%s/portmap): make deps", debianCNIDir)
	}
	nodes := newLab(t, 2, 1)
	nd, client := nodes[0], nodes[1]
	list := nd.conflist("1.0.0", "portmap")
	p := nd.newPodNS("web")
	const hostPort, podPort = 30080, 8080
	p.rt.CapabilityArgs = map[string]any{
		"portMappings": []map[string]any{{"hostPort": hostPort, "containerPort": podPort, "protocol": "tcp"}},
	}
	nd.mustAdd(p, list)
	if p.version != "1.0.0" {
		t.Errorf("chain result cniVersion %q, want 1.0.0", p.version)
	}
	serveEcho(t, p, podPort)
	target := netip.AddrPortFrom(nd.ns.Addr(), hostPort).String()
	if err := echo(client.ns.Path(), target, "via hostPort"); err != nil {
		t.Fatalf("%s -> %s (hostPort of %s): %v", client.ns.Name, target, p.addr, err)
	}
	// The pod itself is not on the underlay: only the DNAT reaches it.
	if err := echo(client.ns.Path(), netip.AddrPortFrom(nd.ns.Addr(), podPort).String(), "direct"); err == nil {
		t.Errorf("pod port %d answered on the node address without a mapping", podPort)
	}
	if err := nd.del(p, list); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	out, _ := nd.ns.Run(context.Background(), "iptables-save", "-t", "nat")
	if strings.Contains(out, fmt.Sprint(hostPort)) {
		t.Errorf("portmap rules left after DEL:\n%s", out)
	}
	if err := echo(client.ns.Path(), target, "after DEL"); err == nil {
		t.Errorf("hostPort still answers after DEL")
	}
}

// Issue 5, test 4: after a simulated crash (the runtime lost its CNI cache,
// three pods' sandboxes are gone from its books, a plugin died between
// creating an address file and writing its owner, and one valid pod's
// address file is lost), GC with two pods still valid frees every other
// allocation, every host veth without a valid attachment or without an
// allocation, and leaves the one intact pod working.
func TestGCAfterCrash(t *testing.T) {
	nd := newLab(t, 1, 1)[0]
	list := nd.conflist("1.1.0")
	var pods []*pod
	for i := range 5 {
		p := nd.newPodNS(fmt.Sprintf("p%d", i))
		nd.mustAdd(p, list)
		pods = append(pods, p)
	}
	keep, unallocated, stale := pods[0], pods[1], pods[2:]
	if err := os.Remove(filepath.Join(nd.dataDir, unallocated.addr.String())); err != nil {
		t.Fatal(err)
	}
	// The half-written reservation of a killed plugin: the file exists,
	// its owner line does not.
	lease := nd.waitReady()
	orphan := netip.MustParsePrefix(lease.Block).Addr().Next().Next().Next().Next().Next().Next().Next().Next().Next().Next()
	for _, p := range pods {
		if p.addr == orphan {
			t.Fatalf("test setup: orphan address %s is in use", orphan)
		}
	}
	if err := os.WriteFile(filepath.Join(nd.dataDir, orphan.String()), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if n := len(nd.allocations()); n != 5 {
		t.Fatalf("setup: %d allocations, want 5", n)
	}

	// A fresh cache dir: the runtime restarted without its state, so
	// libcni cannot DEL the stale attachments itself and GC must.
	rt := newCNIConfig([]string{cniBinDir}, t.TempDir())
	err := nd.do(func(ctx context.Context) error {
		return rt.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{
			{ContainerID: keep.rt.ContainerID, IfName: keep.rt.IfName},
			{ContainerID: unallocated.rt.ContainerID, IfName: unallocated.rt.IfName},
		}})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	got := nd.allocations()
	if len(got) != 1 || !strings.HasPrefix(got[keep.addr.String()], keep.rt.ContainerID) {
		t.Errorf("allocations after GC: %v, want only %s of %s", got, keep.addr, keep.rt.ContainerID)
	}
	for _, p := range append(stale, unallocated) {
		if nd.linkExists(p.host) {
			t.Errorf("GC left %s's host veth %s", p.name, p.host)
		}
		if r := nd.routeTo(p.addr); r != "" {
			t.Errorf("GC left the route to %s: %s", p.addr, r)
		}
	}
	if !nd.linkExists(keep.host) {
		t.Errorf("GC removed the valid pod's veth %s", keep.host)
	}
	if err := nd.check(keep, list); err != nil {
		t.Errorf("CHECK of the valid pod after GC: %v", err)
	}
	// ADD works after GC and does not hand out the kept pod's address.
	p := nd.newPodNS("after")
	nd.mustAdd(p, list)
	if p.addr == keep.addr {
		t.Errorf("new pod got the valid pod's address %s", p.addr)
	}
}
