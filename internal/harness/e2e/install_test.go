package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// install is weft's installation on the shared cluster: TestInstall does
// it, and any test run alone does it first. dir is the kustomization
// applied last (TestUninstall deletes it, as a user deletes what they
// applied).
var install struct {
	sync.Mutex
	done bool
	dir  string
}

// liveNodes are the Kubernetes nodes that run: those Up started, until
// TestNodeDeath replaces one.
var liveNodes []*Node

func live() []*Node { return liveNodes }

// agentFlags are the flags testdata/install adds to the DaemonSet's agents;
// the control plane's agent runs with the same. The pool, a /22 of /24
// blocks, has exactly one block per member (three nodes and the control
// plane), so a node that replaces a dead one must wait for the dead one's
// block: the lease TTL is short for that.
var agentFlags = []string{"--lease-ttl=30s", "--cluster-cidr=100.64.0.0/22"}

// leaseTTL is agentFlags' --lease-ttl.
const leaseTTL = 30 * time.Second

// kustomization is the absolute path of a test kustomization in testdata.
func kustomization(t *testing.T, name string) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// applyKustomization is `kubectl apply -k` of a test kustomization.
func applyKustomization(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	dir := kustomization(t, name)
	out, err := lab.Kubectl(ctx, "apply", "-k", dir)
	if err != nil {
		t.Fatalf("kubectl apply -k %s: %v", dir, err)
	}
	t.Logf("kubectl apply -k %s:\n%s", dir, out)
	return dir
}

// applyInstall is the README's install with the test kustomization: the
// gossip key Secret and `kubectl apply -k`; then weft's agent on the
// control-plane machine, with the key from that Secret.
func applyInstall(t *testing.T, ctx context.Context) {
	t.Helper()
	install.dir = applyKustomization(t, ctx, "install")
	out, err := exec.CommandContext(ctx, filepath.Join(lab.Dir, "weft"), "keygen", "--k8s-secret", "weft-gossip").Output()
	if err != nil {
		t.Fatalf("weft keygen: %v", err)
	}
	if _, err := lab.KubectlInput(ctx, string(out), "apply", "-f", "-"); err != nil {
		t.Fatalf("gossip key: %v", err)
	}
	sec, err := lab.Client.CoreV1().Secrets("weft-system").Get(ctx, "weft-gossip", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key, ok := sec.Data["gossip.key"]
	if !ok {
		t.Fatalf("Secret weft-gossip has no gossip.key: keys %v", slices.Collect(maps.Keys(sec.Data)))
	}
	keyFile := filepath.Join(lab.Dir, "cp-gossip.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := lab.StartCPAgent(filepath.Join(lab.Dir, "weft"), keyFile, live()[0].Net, agentFlags...); err != nil {
		t.Fatalf("the control plane's agent: %v", err)
	}
}

// waitInstalled waits until every live node is Ready, the agent DaemonSet
// is ready on each of them, and the control plane's agent is ready.
func waitInstalled(t *testing.T, ctx context.Context, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "every node Ready and the agent ready on each", func() error {
		for _, n := range live() {
			node, err := lab.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !Ready(node) {
				return fmt.Errorf("node %s not Ready", n.Name)
			}
		}
		ds, err := lab.Client.AppsV1().DaemonSets("weft-system").Get(ctx, "weft-agent", metav1.GetOptions{})
		if err != nil {
			return err
		}
		want := int32(len(live()))
		if ds.Status.NumberReady != want || ds.Status.DesiredNumberScheduled != want || ds.Status.UpdatedNumberScheduled != want {
			return fmt.Errorf("weft-agent: %d ready, %d updated, %d scheduled (want %d)", ds.Status.NumberReady, ds.Status.UpdatedNumberScheduled, ds.Status.DesiredNumberScheduled, want)
		}
		r, err := lab.CPAgent.Status()
		if err != nil {
			return fmt.Errorf("the control plane's agent: %w\n%s", err, lab.CPAgent.LogTail())
		}
		if !r.Ready {
			return fmt.Errorf("the control plane's agent is not ready: %s", r.LastError)
		}
		return nil
	})
}

// needInstall makes sure weft is installed (TestInstall's work, when a
// test runs alone).
func needInstall(t *testing.T) {
	t.Helper()
	install.Lock()
	defer install.Unlock()
	if install.done {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	applyInstall(t, ctx)
	waitInstalled(t, ctx, 3*time.Minute)
	install.done = true
}

func hasCondition(n *corev1.Node, typ corev1.NodeConditionType, status corev1.ConditionStatus) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == typ && c.Status == status {
			return true
		}
	}
	return false
}

// waitFor polls cond every 500 ms until it returns nil or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
