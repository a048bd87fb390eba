package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// marker is testapp's plaintext pattern (testapp.Marker).
const marker = "weft-e2e-plaintext-marker."

// echoDeployment is testapp serve on every started node, one pod each.
func echoDeployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: new(int64),
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew:           1,
						TopologyKey:       "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector:     &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []corev1.Container{{
						Name:            "app",
						Image:           AppImage,
						ImagePullPolicy: corev1.PullNever,
						Ports:           []corev1.ContainerPort{{ContainerPort: 8080}},
					}},
				},
			},
		},
	}
}

// runningPods waits until the Deployment's want pods run on want distinct
// nodes and returns them.
func runningPods(t *testing.T, ctx context.Context, ns, app string, want int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	waitFor(t, 120*time.Second, fmt.Sprintf("%d %s pods running on %d nodes", want, app, want), func() error {
		list, err := lab.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return err
		}
		pods = pods[:0]
		nodes := map[string]bool{}
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				return fmt.Errorf("pod %s on %q: %s", p.Name, p.Spec.NodeName, p.Status.Phase)
			}
			pods = append(pods, p)
			nodes[p.Spec.NodeName] = true
		}
		if len(pods) != want || len(nodes) != want {
			return fmt.Errorf("%d pods running on %d nodes", len(pods), len(nodes))
		}
		return nil
	})
	return pods
}

func createNamespace(t *testing.T, ctx context.Context, name string, labels map[string]string) {
	t.Helper()
	_, err := lab.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func (c *Cluster) node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// agentPods are the running weft agent pods of the live nodes, by node name.
func agentPods(t *testing.T, ctx context.Context) map[string]corev1.Pod {
	t.Helper()
	list, err := lab.Client.CoreV1().Pods("weft-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-agent"})
	if err != nil {
		t.Fatal(err)
	}
	// Only live nodes': a deleted node's pods stay in the API until the
	// pod garbage collector gets to them.
	onLive := map[string]bool{}
	for _, n := range live() {
		onLive[n.Name] = true
	}
	pods := map[string]corev1.Pod{}
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && onLive[p.Spec.NodeName] {
			pods[p.Spec.NodeName] = p
		}
	}
	return pods
}

// pingBlock pings the first address of a peer's block from a node (the
// peer's weft0 address), which makes the two tunnels shake hands.
func pingBlock(ctx context.Context, n *Node, block string) {
	if n == nil {
		return
	}
	pfx, err := netip.ParsePrefix(block)
	if err != nil {
		return
	}
	n.Net.Run(ctx, "ping", "-c", "1", "-W", "1", pfx.Masked().Addr().Next().String())
}

// meshDiagnostics logs what each node's agent says and what its kernel
// routes are, for a failed connectivity check: the agent pods' logs, and
// each node's routes into the pod range.
func meshDiagnostics(t *testing.T, ctx context.Context) {
	t.Helper()
	for node, p := range agentPods(t, ctx) {
		logs, _ := lab.Kubectl(ctx, "-n", "weft-system", "logs", p.Name, "-c", "agent")
		t.Logf("agent %s on %s, log:\n%s", p.Name, node, logs)
		n := lab.node(node)
		if n == nil {
			continue
		}
		routes, _ := n.Net.Run(ctx, "ip", "route", "show", "root", "100.64.0.0/10")
		t.Logf("%s: routes in 100.64.0.0/10:\n%s", node, routes)
		// Where the agent's goroutines are: a gossip loop stuck behind a
		// lock shows here. From its profiles on the node's socket.
		if b, err := api.NewClient(n.HostPath("/run/weft/agent.sock")).Get(ctx, "/debug/pprof/goroutine?debug=1"); err == nil {
			t.Logf("%s: the agent's goroutines:\n%s", node, b)
		} else {
			t.Logf("%s: the agent's goroutines: %v", node, err)
		}
	}
	if lab.CPAgent != nil {
		t.Logf("the control plane's agent, log:\n%s", lab.CPAgent.LogTail())
	}
}

// waitRouted waits until every node routes every other node's pod address
// into the tunnel (`ip route get` says dev weft0): the mesh has taken in
// the blocks of all pods' nodes. A user expects that within seconds of the
// pods running (every agent was ready before): 15 s at most. How long it
// took is logged, with the agents' logs and routes when it took longer
// than a few seconds (it takes well under one), so a slow start shows in a
// passing run too.
func waitRouted(t *testing.T, ctx context.Context, pods []corev1.Pod) {
	t.Helper()
	start := time.Now()
	waitFor(t, 15*time.Second, "every node routes every other node's pod into weft0", func() error {
		for _, p := range pods {
			for _, n := range live() {
				if n.Name == p.Spec.NodeName {
					continue
				}
				out, err := n.Net.Run(ctx, "ip", "route", "get", p.Status.PodIP)
				if err != nil || !strings.Contains(out, " dev weft0 ") {
					return fmt.Errorf("%s: route to pod %s (%s, on %s): %s %v", n.Name, p.Name, p.Status.PodIP, p.Spec.NodeName, strings.TrimSpace(out), err)
				}
			}
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("every pod routed from every node %v after the pods ran", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Logf("slow: the agents' view follows")
		meshDiagnostics(t, ctx)
	}
}
