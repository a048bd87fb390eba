package agent_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// Issue 4, test 4: three nodes, one `weft agent` process each, started with
// only a join address and a gossip key: every node gets the other two as
// WireGuard peers and the node overlay addresses ping each other.
func TestAgentsFormMesh(t *testing.T) {
	lab := needLab(t, 3)
	key := writeGossipKey(t)
	n1 := startAgent(t, lab, lab.Nodes[0], key, nil)
	n2 := startAgent(t, lab, lab.Nodes[1], key, lab.Nodes[0])
	n3 := startAgent(t, lab, lab.Nodes[2], key, lab.Nodes[0])
	all := []*agentProc{n1, n2, n3}
	start := time.Now()
	for _, p := range all {
		eventually(t, 20*time.Second, p.node.Name+" meshed", func() error {
			if err := meshed(p, "n1", "n2", "n3"); err != nil {
				// handshakes happen on first traffic: ping the others.
				for _, q := range all {
					if q != p {
						if a, err := q.status(); err == nil && a.Self.Address != "" {
							pingFrom(p.node, netip.MustParseAddr(a.Self.Address))
						}
					}
				}
				return err
			}
			return nil
		})
	}
	t.Logf("mesh of 3 formed in %v", time.Since(start).Round(time.Millisecond))
	// The agents run with the default --timer-slack on every thread
	// (internal/procs.ExecWithTimerSlack): they executed themselves once.
	for _, p := range all {
		if err := threadsTimerSlack(p.Pid(), 2*time.Millisecond); err != nil {
			t.Errorf("%s: %v", p.node.Name, err)
		}
	}
	blocks := map[string]string{}
	for _, p := range all {
		st, _ := p.status()
		if prev, dup := blocks[st.Self.Block]; dup {
			t.Fatalf("%s and %s both hold %s", prev, p.node.Name, st.Self.Block)
		}
		blocks[st.Self.Block] = p.node.Name
		if !st.Self.GossipEncrypted {
			t.Errorf("%s: gossip not encrypted", p.node.Name)
		}
	}
	for _, p := range all {
		for _, q := range all {
			if p != q {
				// The address is read again on every try: a lease conflict
				// between two nodes that joined at once may still be
				// settling and move one of them to another block.
				eventually(t, 30*time.Second, "overlay ping "+p.node.Name+" -> "+q.node.Name, func() error {
					return pingFrom(p.node, nodeAddress(t, q))
				})
			}
		}
	}
}

// Issue 4, test 4 (second half): a graceful leave frees the block at once
// for a newcomer. The range has room for exactly four /24 blocks, so the
// newcomer can only get the leaver's.
func TestGracefulLeaveFreesBlock(t *testing.T) {
	lab := needLab(t, 5)
	key := writeGossipKey(t)
	small := []string{"--cluster-cidr", "100.64.0.0/22"}
	var ps []*agentProc
	for i := 0; i < 4; i++ {
		var join = lab.Nodes[0]
		if i == 0 {
			join = nil
		}
		ps = append(ps, startAgent(t, lab, lab.Nodes[i], key, join, small...))
		// one at a time, so each sees the others' claims
		p := ps[i]
		eventually(t, 15*time.Second, p.node.Name+" leased", func() error {
			st, err := p.status()
			if err != nil || st.Self.Block == "" || !st.Ready {
				return fmt.Errorf("no lease yet: %v", err)
			}
			return nil
		})
	}
	st3, _ := ps[2].status()
	freed := st3.Self.Block
	ps[2].stop(syscall.SIGTERM)
	eventually(t, 10*time.Second, "n1 sees n3 left", func() error {
		st, err := ps[0].status()
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.Name == "n3" && m.State == "left" {
				return nil
			}
		}
		return fmt.Errorf("n3 not left yet")
	})
	n5 := startAgent(t, lab, lab.Nodes[4], key, lab.Nodes[0], small...)
	eventually(t, 15*time.Second, "newcomer gets the freed block", func() error {
		st, err := n5.status()
		if err != nil {
			return err
		}
		if st.Self.Block != freed {
			return fmt.Errorf("newcomer has %q, the freed block is %s", st.Self.Block, freed)
		}
		return nil
	})
}

// Issue 4, test 6: an agent with another gossip key never becomes a member
// or a peer of the mesh.
func TestWrongGossipKeyRejected(t *testing.T) {
	lab := needLab(t, 3)
	key := writeGossipKey(t)
	other := writeGossipKey(t)
	n1 := startAgent(t, lab, lab.Nodes[0], key, nil)
	n2 := startAgent(t, lab, lab.Nodes[1], key, lab.Nodes[0])
	intruder := startAgent(t, lab, lab.Nodes[2], other, lab.Nodes[0])
	a2 := nodeAddressWhenReady(t, n2)
	eventually(t, 15*time.Second, "n1 and n2 meshed", func() error {
		pingFrom(n1.node, a2)
		return meshed(n1, "n1", "n2")
	})
	time.Sleep(3 * time.Second) // gossip rounds in which the intruder could get in
	for _, p := range []*agentProc{n1, n2} {
		st, err := p.status()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range st.Members {
			if m.Name == "n3" {
				t.Errorf("%s accepted the intruder as %s member", p.node.Name, m.State)
			}
		}
	}
	st, err := intruder.status()
	if err == nil {
		for _, m := range st.Members {
			if m.Name != "n3" {
				t.Errorf("the intruder sees %s", m.Name)
			}
		}
	}
}

// Issue 4, test 5: kill -9 an agent while a TCP stream crosses its node:
// the stream survives; the restarted agent reports the same block and key
// and adopts the same interface instead of recreating it.
func TestKillNineKeepsStream(t *testing.T) {
	lab := needLab(t, 2)
	key := writeGossipKey(t)
	n1 := startAgent(t, lab, lab.Nodes[0], key, nil)
	n2 := startAgent(t, lab, lab.Nodes[1], key, lab.Nodes[0])
	a2 := nodeAddressWhenReady(t, n2)
	eventually(t, 15*time.Second, "meshed", func() error {
		pingFrom(n1.node, a2)
		return meshed(n1, "n1", "n2")
	})
	before, _ := n2.status()
	ifindex := linkIndex(t, n2)

	// A stream n1 -> n2 over the overlay, from sockets this test owns.
	received, stopStream := streamAcross(t, n1, n2)
	time.Sleep(time.Second)

	n2.stop(syscall.SIGKILL)
	if got := linkIndex(t, n2); got != ifindex {
		t.Fatalf("after kill -9 the interface is %d, want %d still there", got, ifindex)
	}
	n2.start()
	eventually(t, 20*time.Second, "restarted agent ready", func() error {
		st, err := n2.status()
		if err != nil || !st.Ready {
			return fmt.Errorf("not ready: %v", err)
		}
		return nil
	})
	mark := received.Load()
	eventually(t, 30*time.Second, "stream flows again", func() error {
		if got := received.Load(); got < mark+1<<20 {
			return fmt.Errorf("only %d bytes since the restart", got-mark)
		}
		return nil
	})
	if err := stopStream(); err != nil {
		t.Fatalf("stream broke: %v", err)
	}
	after, _ := n2.status()
	if after.Self.Block != before.Self.Block || after.Self.PublicKey != before.Self.PublicKey {
		t.Errorf("restart changed identity: block %s -> %s, key %s -> %s", before.Self.Block, after.Self.Block,
			before.Self.Fingerprint, after.Self.Fingerprint)
	}
	if got := linkIndex(t, n2); got != ifindex {
		t.Errorf("restart recreated the interface: %d -> %d", ifindex, got)
	}
}

func nodeAddressWhenReady(t *testing.T, p *agentProc) netip.Addr {
	t.Helper()
	var a netip.Addr
	eventually(t, 15*time.Second, p.node.Name+" leased", func() error {
		st, err := p.status()
		if err != nil || !st.Ready {
			return fmt.Errorf("not ready: %v", err)
		}
		a, err = netip.ParseAddr(st.Self.Address)
		return err
	})
	return a
}

func linkIndex(t *testing.T, p *agentProc) int {
	t.Helper()
	idx := 0
	p.node.Do(func() error {
		if l, err := netlink.LinkByName(p.iface()); err == nil {
			idx = l.Attrs().Index
		}
		return nil
	})
	return idx
}

// threadsTimerSlack checks that every thread of process pid has a timer
// slack of want.
func threadsTimerSlack(pid int, want time.Duration) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc", task.Name(), "timerslack_ns"))
		if err != nil {
			return err
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return err
		}
		if got := time.Duration(ns); got != want {
			return fmt.Errorf("thread %s of %d threads: timer slack %v, want %v", task.Name(), len(tasks), got, want)
		}
	}
	return nil
}
