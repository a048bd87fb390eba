package kubejoin

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func node(name, ip, ready string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/os": "linux"}}}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeExternalIP, Address: "203.0.113.1"},
			{Type: corev1.NodeInternalIP, Address: ip},
		}
	}
	if ready != "" {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionStatus(ready)}}
	}
	return n
}

func TestCandidates(t *testing.T) {
	deleting := node("deleting", "10.0.0.9", "True")
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
	nodes := []corev1.Node{
		node("self", "10.0.0.1", "True"),
		node("a", "10.0.0.2", "True"),
		node("b", "10.0.0.3", "False"),   // no CNI yet: kept, after the ready
		node("c", "10.0.0.4", "Unknown"), // kubelet silent: left out
		node("d", "10.0.0.5", ""),        // just registered: kept
		node("e", "", "True"),            // no InternalIP: left out
		node("f", "10.0.0.2", "True"),    // same address as a: once
		node("g", "fd00::7", "True"),
		deleting,
	}
	got := Candidates("self", nodes, 7946, 10)
	ready, notReady := got[:2], got[2:]
	if diff := cmp.Diff([]string{"10.0.0.2:7946", "[fd00::7]:7946"}, sortedCopy(ready)); diff != "" {
		t.Errorf("ready first (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"10.0.0.3:7946", "10.0.0.5:7946"}, sortedCopy(notReady)); diff != "" {
		t.Errorf("then not ready (-want +got):\n%s", diff)
	}
	if got := Candidates("self", nodes, 7946, 1); len(got) != 1 || got[0] != ready[0] {
		t.Errorf("max 1: %v, want [%s]", got, ready[0])
	}
	if got := Candidates("self", nodes[:1], 7946, 5); got == nil || len(got) != 0 {
		t.Errorf("alone: %#v, want an empty list", got)
	}
}

// TestCandidatesSpread: every node gets a stable order of its own, so the
// cluster's joins do not all land on the same few members.
func TestCandidatesSpread(t *testing.T) {
	var nodes []corev1.Node
	for i := range 100 {
		nodes = append(nodes, node("n"+itoa(i), "10.1.0."+itoa(i+1), "True"))
	}
	first := map[string]int{}
	for i := range 100 {
		self := "n" + itoa(i)
		got := Candidates(self, nodes, 7946, 3)
		if diff := cmp.Diff(got, Candidates(self, nodes, 7946, 3)); diff != "" {
			t.Fatalf("%s: not stable:\n%s", self, diff)
		}
		first[got[0]]++
	}
	for addr, n := range first {
		if n > 10 {
			t.Errorf("%s is the first choice of %d of 100 nodes", addr, n)
		}
	}
}

// fakeNodes is a NodeLister over nodes that records the selectors it was
// asked for.
type fakeNodes struct {
	nodes     []corev1.Node
	selectors []string
}

func (f *fakeNodes) ListNodes(_ context.Context, selector string) (*corev1.NodeList, error) {
	f.selectors = append(f.selectors, selector)
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, err
	}
	list := &corev1.NodeList{}
	for _, n := range f.nodes {
		if sel.Matches(labels.Set(n.Labels)) {
			list.Items = append(list.Items, n)
		}
	}
	return list, nil
}

func TestDiscoverListsOnce(t *testing.T) {
	a, b := node("a", "10.0.0.2", "True"), node("b", "10.0.0.3", "True")
	win := node("win", "10.0.0.4", "True")
	win.Labels["kubernetes.io/os"] = "windows"
	client := &fakeNodes{nodes: []corev1.Node{a, b, win}}
	got, err := Discover(context.Background(), Config{Client: client, Self: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"10.0.0.3:7946"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{DefaultSelector}, client.selectors); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if _, err := Discover(context.Background(), Config{Client: client, Self: "a", Selector: "-"}); err != nil {
		t.Fatal(err)
	}
	if got := client.selectors[len(client.selectors)-1]; got != "" {
		t.Errorf("selector - listed with %q, want all nodes", got)
	}
	if _, err := Discover(context.Background(), Config{Client: client}); err == nil || !strings.Contains(err.Error(), "node-name") {
		t.Errorf("no node name: %v", err)
	}
}

// TestDiscoverConfigErrors: without a usable kubeconfig or pod, the error
// says which.
func TestDiscoverConfigErrors(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	bad := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(bad, []byte("current-context: nowhere\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, kubeconfig string
		want             []string
	}{
		{"not in a pod", "", []string{"in-cluster config", "KUBERNETES_SERVICE_HOST"}},
		{"no such file", filepath.Join(t.TempDir(), "missing"), []string{"kubeconfig", "no such file"}},
		{"no such context", bad, []string{"kubeconfig " + bad, `current-context "nowhere"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Discover(context.Background(), Config{Kubeconfig: c.kubeconfig, Self: "a"})
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want it to say %q", err, w)
				}
			}
		})
	}
}

func sortedCopy(s []string) []string { return slices.Sorted(slices.Values(s)) }

func itoa(i int) string { return strconv.Itoa(i) }
