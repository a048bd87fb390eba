package agent_test

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/internal/netlab"
)

// weftBin is the weft binary the lab tests run in each node, built once.
var weftBin string

func TestMain(m *testing.M) {
	code := func() int {
		flag.Parse()
		if os.Geteuid() == 0 && !testing.Short() {
			dir, err := os.MkdirTemp("", "weft-agent-test-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			weftBin = filepath.Join(dir, "weft")
			out, err := exec.Command("go", "build", "-o", weftBin, "github.com/weftnet/weft/cmd/weft").CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build weft: %v\n%s", err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

func needLab(t *testing.T, nodes int) *netlab.Lab {
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

func writeGossipKey(t *testing.T) string {
	t.Helper()
	k, err := agent.GenerateGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(path, []byte(encodeB64(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// agentProc is one `weft agent` process in a lab node.
type agentProc struct {
	t    *testing.T
	node *netlab.Node
	lab  *netlab.Lab
	dir  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *agentProc) socket() string { return filepath.Join(p.dir, "agent.sock") }
func (p *agentProc) iface() string  { return "wf" + p.lab.ID + "-" + p.node.Name }

// startAgent runs `weft agent` in the node, joining `join` (if any).
func startAgent(t *testing.T, lab *netlab.Lab, node *netlab.Node, keyFile string, join *netlab.Node, extra ...string) *agentProc {
	t.Helper()
	p := &agentProc{t: t, node: node, lab: lab, dir: filepath.Join(t.TempDir(), node.Name)}
	p.args = []string{"agent",
		"--node-name", node.Name,
		"--bind", node.Addr().String() + ":7946",
		"--interface", p.iface(),
		"--state-dir", filepath.Join(p.dir, "state"),
		"--socket", p.socket(),
		"--metrics-addr", "",
		"--log-level", "debug",
	}
	if keyFile != "" {
		p.args = append(p.args, "--gossip-key-file", keyFile)
	}
	if join != nil {
		p.args = append(p.args, "--join", join.Addr().String()+":7946")
	}
	p.args = append(p.args, extra...)
	p.start()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.node.Name, p.logTail())
		}
	})
	return p
}

func (p *agentProc) start() {
	p.t.Helper()
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		p.t.Fatal(err)
	}
	logf, err := os.OpenFile(filepath.Join(p.dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", p.node.NS, weftBin}, p.args...)...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); logf.Close(); close(p.done) }()
}

// stop signals the agent and waits for it (SIGKILL after 10 s).
func (p *agentProc) stop(sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *agentProc) logTail() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "agent.log"))
	s := string(b)
	if len(s) > 3000 {
		s = s[len(s)-3000:]
	}
	return s
}

func (p *agentProc) status() (agent.Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return agent.NewClient(p.socket()).Status(ctx)
}

func (p *agentProc) metrics() string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := agent.NewClient(p.socket())
	req, _ := newGet(ctx, "http://agent/metrics")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
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
	seen := map[string]agent.MemberReport{}
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

func newGet(ctx context.Context, url string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
}
