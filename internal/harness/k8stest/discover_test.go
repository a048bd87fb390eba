package k8stest

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/agent/kubejoin"
)

// testNode describes a Node to create: its InternalIP, its Ready
// condition ("" for none yet) and labels.
type testNode struct {
	name, ip, ready string
	labels          map[string]string
	deleting        bool
}

// createNodes registers nodes as kubelets would: the object, then its
// status (a Node's status is written through the status subresource).
func createNodes(t *testing.T, cp *ControlPlane, nodes []testNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	api := cp.Client.CoreV1().Nodes()
	for _, n := range nodes {
		labels := map[string]string{"kubernetes.io/os": "linux", "kubernetes.io/hostname": n.name}
		for k, v := range n.labels {
			labels[k] = v
		}
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: labels}}
		if n.deleting {
			// Held by a finalizer, so a delete leaves it, being deleted.
			node.Finalizers = []string{"weft.dev/test"}
		}
		created, err := api.Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create node %s: %v", n.name, err)
		}
		created.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: n.name},
			{Type: corev1.NodeInternalIP, Address: n.ip},
		}
		if n.ready != "" {
			created.Status.Conditions = []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionStatus(n.ready),
				LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "Test",
			}}
		}
		if _, err := api.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("node %s status: %v", n.name, err)
		}
		if n.deleting {
			if err := api.Delete(ctx, n.name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				patch := []byte(`{"metadata":{"finalizers":null}}`)
				api.Patch(ctx, n.name, "application/merge-patch+json", patch, metav1.PatchOptions{})
			})
		}
	}
}

// TestJoinDiscoveryFromNodes: the agent's join-address
// discovery (kubejoin.Discover, what `weft agent --join-from-kubernetes`
// runs), with the agent's service account, against Nodes in a real
// apiserver.
func TestJoinDiscoveryFromNodes(t *testing.T) {
	cp := Start(t)
	install(t, cp, "")
	createNodes(t, cp, []testNode{
		{name: "self", ip: "192.0.2.1", ready: "True"},
		{name: "ready-1", ip: "192.0.2.11", ready: "True"},
		{name: "ready-2", ip: "192.0.2.12", ready: "True"},
		{name: "ready-3", ip: "192.0.2.13", ready: "True"},
		// A first install: the kubelet reports NotReady until a CNI
		// config exists, and that is where the other agents are.
		{name: "no-cni-yet", ip: "192.0.2.21", ready: "False"},
		{name: "just-registered", ip: "192.0.2.22"},
		// The node controller's verdict on a node it cannot hear.
		{name: "gone-silent", ip: "192.0.2.31", ready: "Unknown"},
		{name: "windows", ip: "192.0.2.32", ready: "True", labels: map[string]string{"kubernetes.io/os": "windows"}},
		{name: "being-deleted", ip: "192.0.2.33", ready: "True", deleting: true},
	})
	token := cp.ServiceAccountToken(t, "weft-system", "weft-agent")
	agent := cp.APIClientFor(t, token)
	ctx := context.Background()

	// Ready nodes first, then NotReady ones; never self, the silent, the
	// Windows or the deleted node. The order within a group is the hash
	// of self and the name: checked as a set here, pinned in kubejoin's
	// unit tests.
	got, err := kubejoin.Discover(ctx, kubejoin.Config{Client: agent, Self: "self", Port: 7946, Max: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("got %v, want the 3 ready and 2 not-ready nodes", got)
	}
	if diff := cmp.Diff(sorted(got[:3]), []string{"192.0.2.11:7946", "192.0.2.12:7946", "192.0.2.13:7946"}); diff != "" {
		t.Errorf("ready nodes first (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(sorted(got[3:]), []string{"192.0.2.21:7946", "192.0.2.22:7946"}); diff != "" {
		t.Errorf("then not-ready ones (-got +want):\n%s", diff)
	}

	// Bounded, and the same answer every time for the same node.
	two, err := kubejoin.Discover(ctx, kubejoin.Config{Client: agent, Self: "self", Port: 7946, Max: 2})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(two, got[:2]); diff != "" {
		t.Errorf("Max 2 (-got +want):\n%s", diff)
	}

	// Through a kubeconfig file, as the command does with --kubeconfig,
	// with the default bound (5) and selector (Linux nodes).
	kc := cp.WriteKubeconfig(t, token)
	viaFile, err := kubejoin.Discover(ctx, kubejoin.Config{Kubeconfig: kc, Self: "ready-1", Port: 17946})
	if err != nil {
		t.Fatal(err)
	}
	if len(viaFile) != 5 || strings.Contains(strings.Join(viaFile, " "), "192.0.2.11:") {
		t.Errorf("from ready-1 via kubeconfig: %v, want 5 others", viaFile)
	}
	for _, a := range viaFile {
		if _, port, _ := net.SplitHostPort(a); port != "17946" {
			t.Errorf("%s: want port 17946", a)
		}
	}

	// The only node of the cluster: nothing to join, no error.
	alone, err := kubejoin.Discover(ctx, kubejoin.Config{Client: agent, Self: "x", Selector: "weft.dev/none=1"})
	if err != nil || len(alone) != 0 {
		t.Errorf("no other node: got %v, %v; want nothing, no error", alone, err)
	}

	// Errors say what failed: a service account without the right (the
	// injector's), a token the apiserver does not know, and an apiserver
	// that does not answer, within the timeout.
	injector := cp.APIClientFor(t, cp.ServiceAccountToken(t, "weft-system", "weft-injector"))
	_, err = kubejoin.Discover(ctx, kubejoin.Config{Client: injector, Self: "self"})
	if !apierrors.IsForbidden(errors.Unwrap(err)) || !strings.Contains(err.Error(), "list nodes") ||
		!strings.Contains(err.Error(), "403 Forbidden") || !strings.Contains(err.Error(), `cannot list resource "nodes"`) {
		t.Errorf("injector's token: got %v, want a forbidden error that says it listed nodes, with the code and the apiserver's message", err)
	}
	_, err = kubejoin.Discover(ctx, kubejoin.Config{Client: cp.APIClientFor(t, "not-a-token"), Self: "self"})
	if !apierrors.IsUnauthorized(errors.Unwrap(err)) || !strings.Contains(err.Error(), "401 Unauthorized") {
		t.Errorf("unknown token: got %v, want unauthorized", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // accepts nothing: connections hang in the backlog
	silent := cp.WriteKubeconfig(t, token)
	os.WriteFile(silent, []byte(strings.Replace(mustRead(t, silent), cp.URL, "https://"+ln.Addr().String(), 1)), 0o600)
	start := time.Now()
	_, err = kubejoin.Discover(ctx, kubejoin.Config{Kubeconfig: silent, Self: "self", Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "list nodes") || time.Since(start) > 10*time.Second {
		t.Errorf("silent apiserver: got %v after %s, want a list nodes error after about 2 s", err, time.Since(start))
	}
	t.Logf("silent apiserver: %v (after %s)", err, time.Since(start).Round(time.Millisecond))
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }
