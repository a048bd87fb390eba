package agent_test

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/agent/membership"
	"github.com/weftnet/weft/internal/harness/gobuild"
	"github.com/weftnet/weft/internal/netlab"
)

// weftBin is the weft binary the lab tests run in each node, built once.
var weftBin string

func TestMain(m *testing.M) {
	code := func() int {
		flag.Parse()
		if os.Geteuid() == 0 && !testing.Short() {
			bin, cleanup, err := gobuild.WeftTemp("weft-agent-test-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer cleanup()
			weftBin = bin
		}
		return m.Run()
	}()
	os.Exit(code)
}

func needLab(t testing.TB, nodes int) *netlab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs weft agents in network namespaces")
	}
	if testing.Short() {
		t.Skip("lab test with real agent processes; runs without -short")
	}
	lab, err := netlab.New(context.Background(), netlab.Config{Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return lab
}

func writeGossipKey(t testing.TB) string {
	t.Helper()
	k, err := membership.GenerateGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(path, []byte(encodeB64(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// agentProc is one `weft agent` process in a lab node, stopped at cleanup.
type agentProc struct {
	*netlab.Agent
	t    testing.TB
	node *netlab.Node
}

// startAgent runs `weft agent` in the node, joining `join` (if any).
func startAgent(t testing.TB, lab *netlab.Lab, node *netlab.Node, keyFile string, join *netlab.Node, extra ...string) *agentProc {
	t.Helper()
	a, err := lab.StartAgent(node, netlab.AgentConfig{
		Bin: weftBin, Dir: filepath.Join(t.TempDir(), node.Name),
		GossipKeyFile: keyFile, Join: join, Extra: extra,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &agentProc{Agent: a, t: t, node: node}
	t.Cleanup(func() {
		p.Stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("log of %s:\n%s", node.Name, p.LogTail())
		}
	})
	return p
}

func (p *agentProc) start() {
	p.t.Helper()
	if err := p.Start(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *agentProc) stop(sig syscall.Signal)     { p.Stop(sig) }
func (p *agentProc) iface() string               { return p.Interface() }
func (p *agentProc) status() (api.Report, error) { return p.Status() }
func (p *agentProc) metrics() string             { return p.Metrics() }

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

// meshed checks that p sees every name alive, each other one a peer with a
// handshake and a block it owns.
func meshed(p *agentProc, names ...string) error {
	st, err := p.status()
	if err != nil {
		return err
	}
	if !st.Ready {
		return fmt.Errorf("%s not ready", p.node.Name)
	}
	seen := map[string]api.MemberReport{}
	for _, m := range st.Members {
		seen[m.Name] = m
	}
	for _, n := range names {
		m, ok := seen[n]
		switch {
		case !ok:
			return fmt.Errorf("%s does not see %s", p.node.Name, n)
		case m.State != "alive":
			return fmt.Errorf("%s sees %s %s", p.node.Name, n, m.State)
		case m.Block == "" || !m.OwnsBlock:
			return fmt.Errorf("%s: %s has no lease (%q)", p.node.Name, n, m.Block)
		case n != p.node.Name && (m.Peer == nil || m.Peer.LastHandshake.IsZero()):
			return fmt.Errorf("%s: no handshake with %s yet", p.node.Name, n)
		}
	}
	return nil
}

func nodeAddress(t *testing.T, p *agentProc) netip.Addr {
	t.Helper()
	st, err := p.status()
	if err != nil {
		t.Fatal(err)
	}
	a, err := netip.ParseAddr(st.Self.Address)
	if err != nil {
		t.Fatalf("%s has no overlay address: %v", p.node.Name, err)
	}
	return a
}

func pingFrom(n *netlab.Node, to netip.Addr) error {
	out, err := n.Run(context.Background(), "ping", "-c", "2", "-i", "0.2", "-w", "5", to.String())
	if err != nil {
		return err
	}
	if !strings.Contains(out, " 2 received") {
		return fmt.Errorf("ping %s from %s: %s", to, n.Name, out)
	}
	return nil
}

func encodeB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
