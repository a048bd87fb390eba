package netlab_test

import (
	"context"
	"errors"
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

	"github.com/weftnet/weft/internal/harness/gobuild"
	"github.com/weftnet/weft/internal/netlab"
)

func needLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and runs weft agents and the CNI plugin")
	}
	if testing.Short() {
		t.Skip("lab test with real agent and plugin processes; runs without -short")
	}
}

// TestPodsThroughCNI: pods added through libcni and the weft plugin get an
// address from their node's lease and reach a pod on the other node; DelPod
// removes the namespace, the host veth and the address; Runtime.Close
// detaches the rest, and Lab.Close removes a pod namespace left attached.
func TestPodsThroughCNI(t *testing.T) {
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := gobuild.Weft(dir)
	if err != nil {
		t.Fatal(err)
	}
	lab, err := netlab.New(ctx, netlab.Config{Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	labClosed := false
	t.Cleanup(func() {
		if !labClosed {
			lab.Close()
		}
	})
	mesh, err := lab.StartMesh(netlab.MeshConfig{Bin: bin, Dir: filepath.Join(dir, "mesh"), Mode: "tun",
		Extra: []string{"--gossip-profile", "local"}})
	if err != nil {
		t.Fatal(err)
	}
	meshClosed := false
	t.Cleanup(func() {
		if !meshClosed {
			mesh.Close()
		}
		if t.Failed() {
			for _, a := range mesh.Agents {
				t.Logf("agent %s:\n%s", a.Node.Name, a.LogTail())
			}
		}
	})
	if err := mesh.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	var pods []*netlab.Pod
	for i, rt := range mesh.Runtimes {
		lease, err := netlab.WaitLease(ctx, mesh.Agents[i].Socket())
		if err != nil {
			t.Fatal(err)
		}
		block := netip.MustParsePrefix(lease.Block)
		for _, name := range []string{"p1", "p2"} {
			p, err := rt.AddPod(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if want := lab.PodNS(rt.Node, name); p.NS != want {
				t.Errorf("pod namespace %q, want %q", p.NS, want)
			}
			if !block.Contains(p.Addr()) {
				t.Errorf("pod %s address %s outside its node's block %s", p.Name, p.Addr(), block)
			}
			if _, err := os.Stat(p.Path()); err != nil {
				t.Errorf("pod namespace: %v", err)
			}
			if !linkExists(ctx, rt.Node, p.HostVeth) {
				t.Errorf("host veth %s of %s missing on %s", p.HostVeth, p.Name, rt.Node.Name)
			}
			pods = append(pods, p)
		}
	}
	if pods[0].Addr() == pods[1].Addr() || pods[0].Addr() == pods[2].Addr() {
		t.Fatalf("duplicate pod addresses: %s %s %s", pods[0].Addr(), pods[1].Addr(), pods[2].Addr())
	}

	// Across nodes, pod to pod: the first connection waits for the peers.
	from, to := pods[0], pods[3]
	l, err := to.Listen("tcp", net.JoinHostPort(to.Addr().String(), "7000"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.Copy(c, io.LimitReader(c, 64))
			c.Close()
		}
	}()
	var last error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if last = echo(ctx, from, l.Addr().String()); last == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("%s -> %s: %v", from.Addr(), to.Addr(), last)
	}

	// DelPod: namespace, host veth and address all go.
	rt := mesh.Runtimes[0]
	gone := pods[1]
	if err := rt.DelPod(gone); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(gone.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod namespace %s still there after DelPod (%v)", gone.NS, err)
	}
	if linkExists(ctx, rt.Node, gone.HostVeth) {
		t.Errorf("host veth %s still there after DelPod", gone.HostVeth)
	}
	store := filepath.Join(dir, "mesh", "n1", "cni", "networks", "weft")
	if _, err := os.Stat(filepath.Join(store, gone.Addr().String())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("address %s still allocated after DelPod (%v)", gone.Addr(), err)
	}
	if got := len(rt.Pods()); got != 1 {
		t.Errorf("runtime lists %d pods after DelPod, want 1", got)
	}

	// Runtime.Close (through Mesh.Close) detaches the rest.
	if err := rt.Close(); err != nil {
		t.Errorf("runtime close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(store, pods[0].Addr().String())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("address %s still allocated after Close (%v)", pods[0].Addr(), err)
	}
	// n2's pods stay attached through Lab.Close: their namespaces must go
	// with the lab. (Agents stop first, as they would on a node going away,
	// so they close their devices while the namespaces still exist.)
	leftover := pods[2].NS
	for _, a := range mesh.Agents {
		a.Stop(syscall.SIGTERM)
	}
	meshClosed = true
	if err := lab.Close(); err != nil {
		t.Errorf("lab close: %v", err)
	}
	labClosed = true
	if _, err := os.Stat(filepath.Join(netlab.NetnsDir, leftover)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod namespace %s survived Lab.Close (%v)", leftover, err)
	}
	for _, n := range listNetns(t) {
		if strings.Contains(n, lab.ID) {
			t.Errorf("namespace %s of the lab left behind", n)
		}
	}
	socks, _ := filepath.Glob("/var/run/wireguard/*" + lab.ID + "*")
	if len(socks) != 0 {
		t.Errorf("UAPI sockets of the lab left behind: %v", socks)
	}
}

func echo(ctx context.Context, p *netlab.Pod, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := p.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	msg := "hello from " + p.Name
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != msg {
		return fmt.Errorf("echo: got %q, want %q", b, msg)
	}
	return nil
}

func linkExists(ctx context.Context, n *netlab.Node, name string) bool {
	return exec.CommandContext(ctx, "ip", "-n", n.NS, "link", "show", "dev", name).Run() == nil
}

func listNetns(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(netlab.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
