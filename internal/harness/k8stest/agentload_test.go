package k8stest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/agent/membership"
	"github.com/weftnet/weft/internal/harness/gobuild"
)

// loadRun is how long TestAgentRequestsOnlyAtStart watches the agent.
const loadRun = 30 * time.Second

// agentProc is one `weft agent` process on loopback.
type agentProc struct {
	name, dir string
	cmd       *exec.Cmd
	exited    chan struct{}
}

// startLoopbackAgent runs `weft agent` as node name bound to ip:port in
// netstack mode (no device, no privilege), with extra flags.
func startLoopbackAgent(t *testing.T, bin, name, ip string, port int, keyFile string, extra ...string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	p := &agentProc{name: name, dir: dir, exited: make(chan struct{})}
	args := append([]string{
		"agent", "--node-name", name,
		"--bind", net.JoinHostPort(ip, strconv.Itoa(port)),
		"--mode", "netstack",
		// Unique: userspace devices put their UAPI socket in the shared
		// /var/run/wireguard/<interface>.sock.
		"--interface", "wk" + RandomHex(5),
		// WireGuard binds every address: each agent needs its own port.
		"--wireguard-port", strconv.Itoa(freeUDPPort(t)),
		"--gossip-key-file", keyFile,
		"--gossip-profile", "local",
		"--state-dir", dir,
		"--socket", filepath.Join(dir, "agent.sock"),
		"--metrics-addr", "",
	}, extra...)
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("log of agent %s:\n%s", name, Tail(filepath.Join(dir, "agent.log")))
		}
	})
	return p
}

// status asks the agent's local API (what `weft status` shows).
func (p *agentProc) status() (api.Report, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", filepath.Join(p.dir, "agent.sock"))
		},
	}}
	var r api.Report
	resp, err := c.Get("http://agent/v1/status")
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("status: %s", resp.Status)
	}
	return r, json.NewDecoder(resp.Body).Decode(&r)
}

// gossipPort finds a port free for TCP and UDP (gossip) on every ip.
func gossipPort(t *testing.T, ips ...string) int {
	t.Helper()
	for range 50 {
		n, _ := rand.Int(rand.Reader, big.NewInt(20000))
		port := 30000 + int(n.Int64())
		if portsFree(port, ips) {
			return port
		}
	}
	t.Fatal("no free port pair on loopback after 50 tries")
	return 0
}

func portsFree(port int, ips []string) bool {
	var closers []interface{ Close() error }
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for _, ip := range ips {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			return false
		}
		closers = append(closers, l)
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			return false
		}
		closers = append(closers, u)
	}
	return true
}

// freeUDPPort is a UDP port on every address that nothing used a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	u, err := net.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	return u.LocalAddr().(*net.UDPAddr).Port
}

// TestAgentRequestsOnlyAtStart: the real `weft agent`
// binary with --join-from-kubernetes (as the DaemonSet runs it, its
// service account's token in a kubeconfig instead of the pod's), joining
// the member that discovery finds, runs for 30 s; the apiserver's audit
// log shows exactly one request from it: the start-up LIST of Nodes.
func TestAgentRequestsOnlyAtStart(t *testing.T) {
	cp := Start(t)
	install(t, cp, "overlays/host")
	bin, err := gobuild.Weft(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Two nodes on two loopback addresses, sharing the gossip port as
	// nodes of a cluster do, and a third whose kubelet went silent.
	const peerIP, selfIP = "127.0.0.2", "127.0.0.3"
	port := gossipPort(t, peerIP, selfIP)
	createNodes(t, cp, []testNode{
		{name: "peer", ip: peerIP, ready: "True"},
		{name: "self", ip: selfIP, ready: "True"},
		{name: "silent", ip: "127.0.0.4", ready: "Unknown"},
	})
	key, err := membership.GenerateGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kubeconfig := cp.WriteKubeconfig(t, cp.ServiceAccountToken(t, "weft-system", "weft-agent"))

	peer := startLoopbackAgent(t, bin, "peer", peerIP, port, keyFile)
	waitFor(t, 30*time.Second, "peer agent ready", func() error {
		st, err := peer.status()
		if err == nil && !st.Ready {
			err = fmt.Errorf("not ready")
		}
		return err
	})
	before, err := cp.AuditEvents(agentSA)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 0 {
		t.Fatalf("requests as the agent before it started: %v", before)
	}

	start := time.Now()
	self := startLoopbackAgent(t, bin, "self", selfIP, port, keyFile,
		"--join-from-kubernetes", "--kubeconfig", kubeconfig)
	waitFor(t, 30*time.Second, "agent joined the peer it discovered", func() error {
		st, err := self.status()
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.Name == "peer" && m.State == "alive" && st.Ready {
				return nil
			}
		}
		return fmt.Errorf("members %v, ready %v", st.Members, st.Ready)
	})
	t.Logf("agent joined through discovery in %s; watching it until %s have passed", time.Since(start).Round(time.Millisecond), loadRun)
	select {
	case <-self.exited:
		t.Fatal("agent exited")
	case <-time.After(time.Until(start.Add(loadRun))):
	}
	select {
	case <-self.exited:
		t.Fatal("agent exited")
	default:
	}

	events, err := cp.AuditEvents(agentSA)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range events {
		lines = append(lines, e.String())
	}
	if len(events) != 1 {
		t.Fatalf("agent made %d requests in %s, want exactly 1 (the start-up list of nodes):\n%s",
			len(events), loadRun, strings.Join(lines, "\n"))
	}
	e := events[0]
	if e.Verb != "list" || e.ObjectRef == nil || e.ObjectRef.Resource != "nodes" || e.ResponseStatus == nil || e.ResponseStatus.Code != 200 {
		t.Errorf("the one request: %s, want a successful list of nodes", e)
	}
	if !strings.HasPrefix(e.UserAgent, "weft-agent") {
		t.Errorf("user agent %q, want weft-agent", e.UserAgent)
	}
	t.Logf("the agent's requests in %s: %s", loadRun, strings.Join(lines, "; "))

	// The count is no artefact of a slow or silent audit log: one more
	// request with the agent's token shows up at once.
	agentClient := cp.ClientFor(t, cp.ServiceAccountToken(t, "weft-system", "weft-agent"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := agentClient.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if after, err := cp.AuditEvents(agentSA); err != nil || len(after) != 2 {
		t.Errorf("audit log after one more request as the agent: %d events (%v), want 2", len(after), err)
	}
}

// waitFor polls cond every 200 ms until it returns nil, failing t with its
// last error after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
