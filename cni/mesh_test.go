package cni_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/tunnel"
)

// Issue 5, test 6: two nodes running `weft agent`, two pods on each added
// through libcni: every pod reaches every other over TCP, and a capture on
// node 1's underlay while they talk holds only encrypted traffic: WireGuard
// UDP on its port (and the agents' encrypted gossip), never a pod address
// in an IP header, never the marker the pods send.
func TestTwoNodesPodsMeshEncrypted(t *testing.T) {
	nodes := newLab(t, 2, 2)
	var pods []*pod
	owner := map[*pod]*node{}
	for _, nd := range nodes {
		list := nd.conflist("1.1.0")
		for i := range 2 {
			p := nd.newPodNS(fmt.Sprintf("%s-p%d", nd.ns.Name, i))
			nd.mustAdd(p, list)
			serveEcho(t, p, 7000)
			pods = append(pods, p)
			owner[p] = nd
		}
	}
	// The first packet across waits for a WireGuard handshake and for the
	// agents to have each other's blocks: allow time for the mesh to form.
	first, last := pods[0], pods[len(pods)-1]
	eventually(t, 30*time.Second, "first pod-to-pod connection across nodes", func() error {
		return echo(first.path, netip.AddrPortFrom(last.addr, 7000).String(), "warm-up")
	})

	marker := fmt.Sprintf("weft-cni-marker-%d", time.Now().UnixNano())
	file, stop := capture(t, nodes[0].ns, "eth0")
	for _, from := range pods {
		for _, to := range pods {
			if from == to {
				continue
			}
			msg := marker + " " + from.name + "->" + to.name
			if err := echo(from.path, netip.AddrPortFrom(to.addr, 7000).String(), msg); err != nil {
				t.Errorf("%s (%s) -> %s (%s): %v", from.name, from.addr, to.name, to.addr, err)
			}
		}
	}
	stop()

	if n := countInFile(t, file, marker); n != 0 {
		t.Errorf("marker seen %d times in clear on the underlay", n)
	}
	wg := fmt.Sprintf("udp port %d", tunnel.DefaultListenPort)
	t.Logf("captured %d packets on %s eth0", len(pcapMatch(t, file, "")), nodes[0].ns.Name)
	if got := pcapMatch(t, file, wg); len(got) == 0 {
		t.Errorf("no WireGuard packets on the underlay: the pods' traffic went some other way")
	}
	if got := pcapMatch(t, file, "net 100.64.0.0/10"); len(got) != 0 {
		t.Errorf("%d packets with pod addresses in the clear, e.g. %s", len(got), got[0])
	}
	// The lab links' own multicast chatter (IGMP reports, MLD, router and
	// neighbour solicitations) stays on the link and carries no pod data.
	other := fmt.Sprintf("not (%s) and not port %d and not arp and not ip multicast and not ip6 multicast", wg, netlab.AgentPort)
	if got := pcapMatch(t, file, other); len(got) != 0 {
		t.Errorf("%d underlay packets that are neither WireGuard nor gossip, e.g.\n%s", len(got), strings.Join(got[:min(5, len(got))], "\n"))
	}
	for p, nd := range owner {
		if err := nd.del(p, nd.conflist("1.1.0")); err != nil {
			t.Errorf("DEL %s: %v", p.name, err)
		}
	}
}

// capture runs tcpdump on a node's interface into a pcap file until stop.
func capture(t testing.TB, n *netlab.Node, iface string) (file string, stop func()) {
	t.Helper()
	c, err := netlab.StartCapture(context.Background(), n, iface, filepath.Join(t.TempDir(), iface+".pcap"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c.File, c.Stop
}

// pcapMatch returns the summary lines of the packets in file matching a
// tcpdump filter.
func pcapMatch(t testing.TB, file, filter string) []string {
	t.Helper()
	got, err := netlab.PcapMatch(file, filter)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func countInFile(t testing.TB, file, s string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte(s))
}
