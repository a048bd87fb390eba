package tunnel_test

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/tunnel"
)

// A persistent tun device outlives a process killed with SIGKILL, keeps its
// address and routes, and the next Open of the same name adopts the very
// same interface (same ifindex) instead of creating a new one. Close then
// removes it for good.
func TestTUNPersistSurvivesKill(t *testing.T) {
	if os.Getenv("WEFT_PERSIST_CHILD") != "" {
		persistChild()
		return
	}
	lab := newLab(t, 1)
	node := lab.Nodes[0]
	name := "wf" + lab.ID + "-p"

	cmd := exec.Command("ip", "netns", "exec", node.NS, os.Args[0], "-test.run", "^TestTUNPersistSurvivesKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), "WEFT_PERSIST_CHILD="+name)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	ready := false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "ready") {
			ready = true
			break
		}
	}
	if !ready {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child never became ready")
	}
	before := linkIndex(t, node, name)
	if _, err := node.Run(context.Background(), "ip", "route", "add", "100.64.9.0/24", "dev", name); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	if got := linkIndex(t, node, name); got != before {
		t.Fatalf("after SIGKILL the link is %d, want the same %d", got, before)
	}
	routes, _ := node.Run(context.Background(), "ip", "route", "show", "dev", name)
	if !strings.Contains(routes, "100.64.9.0/24") {
		t.Fatalf("route gone after SIGKILL: %q", routes)
	}

	key, _ := tunnel.GeneratePrivateKey()
	var dev tunnel.Device
	err := node.Do(func() error {
		var err error
		dev, err = tunnel.Open(context.Background(), tunnel.Config{Name: name, Mode: tunnel.ModeTUN, PrivateKey: key,
			Address: netip.MustParsePrefix("100.64.0.1/32"), Persist: true})
		return err
	})
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if got := linkIndex(t, node, name); got != before {
		t.Errorf("adopting created a new link %d, want %d", got, before)
	}
	routes, _ = node.Run(context.Background(), "ip", "route", "show", "dev", name)
	if !strings.Contains(routes, "100.64.9.0/24") {
		t.Errorf("route lost on adoption: %q", routes)
	}
	if out, err := node.Run(context.Background(), "wg", "show", name); err != nil || !strings.Contains(out, "interface: "+name) {
		t.Errorf("wg show on the adopted device: %v %s", err, out)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for linkIndex(t, node, name) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("Close left the persistent link behind")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// persistChild opens a persistent device in its namespace and waits to be
// killed.
func persistChild() {
	key, _ := tunnel.GeneratePrivateKey()
	_, err := tunnel.Open(context.Background(), tunnel.Config{Name: os.Getenv("WEFT_PERSIST_CHILD"), Mode: tunnel.ModeTUN,
		PrivateKey: key, Address: netip.MustParsePrefix("100.64.0.1/32"), Persist: true})
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("ready\n")
	time.Sleep(time.Minute)
	os.Exit(2)
}

func linkIndex(t *testing.T, n *netlab.Node, name string) int {
	t.Helper()
	idx := 0
	n.Do(func() error {
		if l, err := netlink.LinkByName(name); err == nil {
			idx = l.Attrs().Index
		}
		return nil
	})
	return idx
}
