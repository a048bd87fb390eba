package e2e

// The tests run in the order of this file (go test runs a file's tests in
// source order): the install first, the uninstall last. Each test that
// needs weft installed calls needInstall, so any one of them also runs
// alone (-run).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/internal/harness/faults"
	"github.com/weftnet/weft/internal/netlab"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestInstall: nodes with no CNI configuration are
// NotReady; `kubectl apply -k` of deploy/'s host overlay makes every node
// Ready with weft's agent on it, and the conflist and plugin on each node
// were written by the agent's own init step.
func TestInstall(t *testing.T) {
	needCluster(t)
	install.Lock()
	if install.done {
		install.Unlock()
		t.Fatal("weft was installed before TestInstall ran: run it first (the tests of e2e_test.go run in order)")
	}
	install.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, n := range live() {
		ents, err := os.ReadDir(n.HostPath("/etc/cni/net.d"))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Fatalf("node %s: /etc/cni/net.d not empty before the install: %v", n.Name, ents)
		}
	}
	// The kubelet reports NetworkReady=false (no CNI configuration) as a
	// NotReady node.
	waitFor(t, 60*time.Second, "every node NotReady for want of a network", func() error {
		for _, n := range live() {
			node, err := lab.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if Ready(node) {
				return fmt.Errorf("node %s Ready with no CNI configuration", n.Name)
			}
			if !hasCondition(node, corev1.NodeReady, corev1.ConditionFalse) {
				return fmt.Errorf("node %s: no Ready=False condition yet", n.Name)
			}
		}
		return nil
	})
	start := time.Now()
	install.Lock()
	defer install.Unlock()
	applyInstall(t, ctx)
	waitInstalled(t, ctx, 3*time.Minute)
	install.done = true
	t.Logf("every node Ready %v after kubectl apply -k", time.Since(start).Round(time.Millisecond))
	for _, n := range live() {
		conf := n.HostPath("/etc/cni/net.d/10-weft.conflist")
		if _, err := os.Stat(conf); err != nil {
			t.Errorf("node %s: the init step wrote no conflist: %v", n.Name, err)
		}
		if b, err := os.ReadFile(conf); err == nil && !bytes.Contains(b, []byte(`"weft.managed"`)) {
			t.Errorf("node %s: conflist without weft's mark:\n%s", n.Name, b)
		}
		bin := n.HostPath("/opt/cni/bin/weft")
		fi, err := os.Stat(bin)
		if err != nil {
			t.Errorf("node %s: the init step wrote no plugin: %v", n.Name, err)
			continue
		} else if fi.Mode()&0o111 == 0 {
			t.Errorf("node %s: plugin %s not executable (%v)", n.Name, bin, fi.Mode())
		}
		if !sameFile(t, bin, filepath.Join(lab.Dir, "weft")) {
			t.Errorf("node %s: %s is not the weft image's binary", n.Name, bin)
		}
	}
}

// TestPodsAcrossNodes: one pod on every node, each
// reaches every other over TCP and UDP, and during a transfer the underlay
// carries the pods' traffic only inside WireGuard.
func TestPodsAcrossNodes(t *testing.T) {
	needCluster(t)
	needInstall(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ns := "e2e-pods"
	createNamespace(t, ctx, ns, nil)
	t.Cleanup(func() {
		lab.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	if _, err := lab.Client.AppsV1().Deployments(ns).Create(ctx, echoDeployment(ns, "echo", int32(len(live()))), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := runningPods(t, ctx, ns, "echo", len(live()))
	defer func() {
		if t.Failed() {
			meshDiagnostics(t, ctx)
		}
	}()
	waitRouted(t, ctx, pods)
	for _, p := range pods {
		var others []string
		for _, q := range pods {
			if q.Name != p.Name {
				others = append(others, q.Status.PodIP)
			}
		}
		out, err := lab.Kubectl(ctx, append([]string{"exec", "-n", ns, p.Name, "--", "testapp", "probe"}, others...)...)
		if err != nil {
			t.Errorf("pod %s (%s, on %s): %v", p.Name, p.Status.PodIP, p.Spec.NodeName, err)
			continue
		}
		t.Logf("pod %s on %s:\n%s", p.Name, p.Spec.NodeName, strings.TrimSpace(out))
	}

	// A megabyte of marker text from the first pod to the second, with a
	// capture on the first pod's node's underlay link.
	from, to := pods[0], pods[1]
	node := lab.node(from.Spec.NodeName)
	if node == nil {
		t.Fatalf("no lab node %s", from.Spec.NodeName)
	}
	// A capture that lost packets (tcpdump not scheduled in time on a
	// loaded machine) proves nothing either way: the transfer is repeated,
	// three tries at most.
	var pcap string
	for try := 1; ; try++ {
		pcap = filepath.Join(t.TempDir(), "underlay.pcap")
		capture, err := netlab.StartCapture(ctx, node.Net, "eth0", pcap, 0)
		if err != nil {
			t.Fatal(err)
		}
		out, err := lab.Kubectl(ctx, "exec", "-n", ns, from.Name, "--", "testapp", "send", to.Status.PodIP, "1000000")
		capture.Stop()
		if err != nil {
			t.Fatalf("transfer %s -> %s: %v", from.Status.PodIP, to.Status.PodIP, err)
		}
		t.Log(strings.TrimSpace(out))
		dropped, err := capture.Dropped()
		if err != nil {
			t.Fatal(err)
		}
		if dropped == 0 {
			break
		}
		if try == 3 {
			t.Fatalf("the underlay capture lost packets in each of %d tries (%d the last time)", try, dropped)
		}
		t.Logf("the underlay capture lost %d packets; again", dropped)
	}
	wg, err := netlab.PcapMatch(pcap, "udp port 51820")
	if err != nil {
		t.Fatal(err)
	}
	// The megabyte went out and came back through this node: at least
	// that much WireGuard payload (GSO batches make packet counts vary).
	if n := udpBytes(wg); n < 1000000 {
		t.Errorf("only %d bytes of WireGuard UDP (%d packets) on %s's underlay during a 1 MB transfer", n, len(wg), node.Name)
	}
	clear, err := netlab.PcapMatch(pcap, "net 100.64.0.0/10")
	if err != nil {
		t.Fatal(err)
	}
	if len(clear) > 0 {
		t.Errorf("%d packets with pod addresses in the clear on the underlay, first: %s", len(clear), clear[0])
	}
	raw, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(marker)) {
		t.Errorf("the transfer's plaintext is on the underlay")
	}
	rest, _ := netlab.PcapMatch(pcap, "not udp port 51820")
	t.Logf("underlay of %s: %d WireGuard packets (%d bytes of UDP payload), %d others (gossip, kubelet to apiserver, ARP)", node.Name, len(wg), udpBytes(wg), len(rest))
}

// TestStatusThroughKubectl: `weft status` run with
// kubectl exec in each agent pod lists every node alive, each peer with a
// recent handshake.
func TestStatusThroughKubectl(t *testing.T) {
	needCluster(t)
	needInstall(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Handshakes happen on traffic: make some between every pair of nodes
	// first (the agents' own overlay addresses answer ping).
	waitFor(t, 60*time.Second, "every agent sees every node alive with a recent handshake", func() error {
		pods := agentPods(t, ctx)
		if len(pods) != len(live()) {
			return fmt.Errorf("%d agent pods running, want %d", len(pods), len(live()))
		}
		for node, p := range pods {
			out, err := lab.Kubectl(ctx, "exec", "-n", "weft-system", p.Name, "-c", "agent", "--", "weft", "status", "--json")
			if err != nil {
				return err
			}
			var r api.Report
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				return fmt.Errorf("%s: weft status --json: %w: %s", node, err, out)
			}
			alive := map[string]bool{}
			for _, m := range r.Members {
				if m.State != "alive" {
					continue
				}
				alive[m.Name] = true
				if m.Name == node {
					continue
				}
				if m.Peer == nil || m.Peer.LastHandshake.IsZero() || time.Since(m.Peer.LastHandshake) > 3*time.Minute {
					// Traffic makes a handshake: ping the peer's overlay address.
					if r.Self.Address != "" && m.Block != "" {
						pingBlock(ctx, lab.node(node), m.Block)
					}
					return fmt.Errorf("%s: peer %s has no recent handshake (%+v)", node, m.Name, m.Peer)
				}
			}
			for _, n := range live() {
				if !alive[n.Name] {
					return fmt.Errorf("%s: node %s not alive in weft status: %s", node, n.Name, out)
				}
			}
		}
		return nil
	})
}

// TestAgentRequestsOnlyAtStart: over a 60 s steady
// run the agents ask the apiserver nothing; all they ever asked is the
// start-up list of Nodes (--join-from-kubernetes), one per agent start.
func TestAgentRequestsOnlyAtStart(t *testing.T) {
	needCluster(t)
	needInstall(t)
	before := agentEvents(t)
	if len(before) == 0 {
		t.Fatal("no agent request in the audit log at all: the agents did not list the Nodes at start (or the audit policy misses them)")
	}
	for _, e := range before {
		if e.Verb != "list" || e.ObjectRef == nil || e.ObjectRef.Resource != "nodes" {
			t.Errorf("agent request other than the start-up list of Nodes: %v", e)
		}
	}
	time.Sleep(60 * time.Second)
	after := agentEvents(t)
	for _, e := range after[len(before):] {
		t.Errorf("agent request during the steady 60 s: %v", e)
	}
	t.Logf("agent requests since the install: %d (every one the start-up list of Nodes), none in 60 s of steady running", len(before))
}

// TestSidecarThroughWebhook: with the injector
// installed, a Deployment in a namespace labelled for injection comes up
// with weft's native sidecar, unprivileged; a host-mode pod reaches the app
// through the mesh (TCP and UDP), and the app reaches the host-mode pod
// through the sidecar's SOCKS5 proxy.
func TestSidecarThroughWebhook(t *testing.T) {
	needCluster(t)
	needInstall(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	installInjector(t, ctx)

	hostNS, carNS := "e2e-host", "e2e-sidecar"
	createNamespace(t, ctx, hostNS, nil)
	createNamespace(t, ctx, carNS, map[string]string{"weft.dev/inject": "enabled"})
	t.Cleanup(func() {
		for _, ns := range []string{hostNS, carNS} {
			lab.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		}
	})
	copyGossipSecret(t, ctx, carNS)

	if _, err := lab.Client.AppsV1().Deployments(hostNS).Create(ctx, echoDeployment(hostNS, "echo", 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	app := echoDeployment(carNS, "app", 1)
	app.Spec.Template.Annotations = map[string]string{"weft.dev/expose": "8080,8080/udp"}
	if _, err := lab.Client.AppsV1().Deployments(carNS).Create(ctx, app, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hostPod := runningPods(t, ctx, hostNS, "echo", 1)[0]
	carPod := readyPod(t, ctx, carNS, "app", 2*time.Minute)
	checkInjected(t, carPod)

	// The sidecar's overlay address: its member (named <pod>.<namespace>)
	// in the control plane agent's view, with a /32 lease.
	member := carPod.Name + "." + carNS
	var carAddr string
	waitFor(t, 90*time.Second, "the sidecar in the mesh with a /32", func() error {
		r, err := lab.CPAgent.Status()
		if err != nil {
			return err
		}
		for _, m := range r.Members {
			if m.Name == member && m.State == "alive" && strings.HasSuffix(m.Block, "/32") {
				carAddr = strings.TrimSuffix(m.Block, "/32")
				return nil
			}
		}
		return fmt.Errorf("no alive member %s with a /32 lease among %d members", member, len(r.Members))
	})
	t.Logf("sidecar %s: overlay address %s, pod %s on %s", member, carAddr, carPod.Status.PodIP, carPod.Spec.NodeName)

	waitFor(t, 60*time.Second, "the host-mode pod reaches the app through the mesh", func() error {
		out, err := lab.Kubectl(ctx, "exec", "-n", hostNS, hostPod.Name, "--", "testapp", "probe", carAddr)
		if err == nil {
			t.Logf("host-mode pod %s -> app:\n%s", hostPod.Status.PodIP, strings.TrimSpace(out))
		}
		return err
	})
	waitFor(t, 60*time.Second, "the app reaches the host-mode pod through the proxy", func() error {
		out, err := lab.Kubectl(ctx, "exec", "-n", carNS, carPod.Name, "-c", "app", "--", "testapp", "proxied", hostPod.Status.PodIP)
		if err == nil {
			t.Logf("app -> host-mode pod:\n%s", strings.TrimSpace(out))
		}
		return err
	})
}

// TestBenchBetweenNodes runs deploy/bench (a `weft bench server` pod and a
// `weft bench client` Job on another node) and, in the same run, the same
// client and server on two nodes' underlay; both tables go to the log.
func TestBenchBetweenNodes(t *testing.T) {
	needCluster(t)
	needInstall(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	pods := runBenchJob(t, ctx)
	underlay := benchUnderlay(t, ctx)
	t.Logf("weft bench, deploy/bench Job, pod to pod across nodes (tun mode):\n%s", pods)
	t.Logf("weft bench, the same client and server on the nodes' underlay:\n%s", underlay)
}

// TestRollingUpdateKeepsStream: the agent DaemonSet
// rolls to a new image tag, node by node, while a TCP stream runs between
// pods on two nodes: the stream survives and every node stays Ready.
func TestRollingUpdateKeepsStream(t *testing.T) {
	needCluster(t)
	needInstall(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ns := "e2e-roll"
	createNamespace(t, ctx, ns, nil)
	t.Cleanup(func() {
		lab.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	if _, err := lab.Client.AppsV1().Deployments(ns).Create(ctx, echoDeployment(ns, "echo", 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := runningPods(t, ctx, ns, "echo", 2)
	s := startStream(t, ctx, ns, pods[0], pods[1])
	s.waitRoundTrips(t, 20, 30*time.Second)

	notReady := watchNodesReady(ctx)
	out, err := lab.Kubectl(ctx, "-n", "weft-system", "set", "image", "daemonset/weft-agent",
		"agent="+WeftImageNext, "install-cni="+WeftImageNext)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(strings.TrimSpace(out))
	start := time.Now()
	if out, err := lab.Kubectl(ctx, "-n", "weft-system", "rollout", "status", "daemonset/weft-agent", "--timeout=5m"); err != nil {
		t.Fatalf("rollout: %v", err)
	} else {
		t.Logf("%s (%v)", strings.TrimSpace(out), time.Since(start).Round(time.Second))
	}
	for node, p := range agentPods(t, ctx) {
		if img := p.Spec.Containers[0].Image; img != WeftImageNext {
			t.Errorf("agent on %s runs %s after the rollout, want %s", node, img, WeftImageNext)
		}
	}
	rt := s.roundTrips()
	s.waitRoundTrips(t, rt+20, 30*time.Second)
	if out, err := s.stop(); err != nil {
		t.Errorf("the stream %s -> %s did not survive the rolling update: %v\n%s", pods[0].Status.PodIP, pods[1].Status.PodIP, err, out)
	} else {
		t.Logf("stream: %s", lastLine(out))
	}
	for _, e := range notReady() {
		t.Errorf("during the rollout: %s", e)
	}
}

// TestNodeDeathReclaimsBlock: a node dies (kubelet,
// containerd, its pods and agent killed at once, its cable cut). Its block
// stays held for the lease TTL; a new node that joins then gets a block,
// and since the pool is full, exactly the dead node's, after the TTL and
// not before. No two members ever hold the same block.
func TestNodeDeathReclaimsBlock(t *testing.T) {
	needCluster(t)
	needInstall(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	victim := live()[len(live())-1]
	newcomer := lab.Nodes[testNodes]
	r, err := lab.CPAgent.Status()
	if err != nil {
		t.Fatal(err)
	}
	holders := blockHolders(r)
	victimBlock := ""
	for b, h := range holders {
		if h == victim.Name {
			victimBlock = b
		}
	}
	if victimBlock == "" || len(holders) != 4 {
		t.Fatalf("before: want 4 members holding the pool's 4 blocks, %s among them; got %v", victim.Name, holders)
	}

	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := faults.Cut(ctx, lab.Lab, victim.Net); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed %s (block %s)", victim.Name, victimBlock)
	var failedAt time.Time
	waitFor(t, 60*time.Second, victim.Name+" failed, still holding its block", func() error {
		r, err := lab.CPAgent.Status()
		if err != nil {
			return err
		}
		for _, m := range r.Members {
			if m.Name == victim.Name {
				if m.State != "failed" {
					return fmt.Errorf("%s is %s", m.Name, m.State)
				}
				if !m.OwnsBlock || m.Block != victimBlock {
					return fmt.Errorf("%s failed but no longer holds %s (block %q, owns %v) before the TTL", m.Name, victimBlock, m.Block, m.OwnsBlock)
				}
				failedAt = time.Now()
				return nil
			}
		}
		return fmt.Errorf("%s is no member", victim.Name)
	})
	t.Logf("%s seen failed %v after the kill", victim.Name, failedAt.Sub(killed).Round(100*time.Millisecond))

	if err := newcomer.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := newcomer.WaitRegistered(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	// Until the TTL is over the newcomer has no block: the pool is full.
	var got time.Time
	waitFor(t, leaseTTL+2*time.Minute, newcomer.Name+" holds "+victim.Name+"'s block", func() error {
		r, err := lab.CPAgent.Status()
		if err != nil {
			return err
		}
		holders, err := distinctBlocks(r)
		if err != nil {
			t.Fatal(err)
		}
		h := holders[victimBlock]
		switch h {
		case newcomer.Name:
			got = time.Now()
			return nil
		case "":
			// The TTL has run out in this view; the newcomer, which knew
			// the block was held (its first probe ack told it) and so
			// waited instead of claiming it, claims it when its own view
			// of the TTL ends.
			return fmt.Errorf("%s is free, not yet claimed", victimBlock)
		case victim.Name:
			return fmt.Errorf("%s still holds %s", h, victimBlock)
		}
		t.Fatalf("%s's block %s went to %q, want %s (the only member without a block)", victim.Name, victimBlock, h, newcomer.Name)
		return nil
	})
	t.Logf("%s got %s %v after %s was seen failed (lease TTL %v)", newcomer.Name, victimBlock, got.Sub(failedAt).Round(100*time.Millisecond), victim.Name, leaseTTL)
	if got.Sub(killed) < leaseTTL {
		t.Errorf("%s's block was reused %v after the kill, before the lease TTL (%v)", victim.Name, got.Sub(killed), leaseTTL)
	}

	// The dead node goes, as an autoscaler deletes it; the newcomer is in.
	if err := lab.Client.CoreV1().Nodes().Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	liveNodes = append(append([]*Node(nil), live()[:len(live())-1]...), newcomer)
	waitInstalled(t, ctx, 3*time.Minute)
	// Every agent's view: no block held twice.
	waitFor(t, 60*time.Second, "every agent sees distinct blocks", func() error {
		pods := agentPods(t, ctx)
		if len(pods) != len(live()) {
			return fmt.Errorf("%d agent pods running on the %d live nodes", len(pods), len(live()))
		}
		for node, p := range pods {
			r, err := agentStatus(ctx, p)
			if err != nil {
				return fmt.Errorf("%s: %w", node, err)
			}
			if _, err := distinctBlocks(r); err != nil {
				t.Fatalf("%s's view: %v", node, err)
			}
			if r.Self.Block == "" {
				return fmt.Errorf("%s has no block yet", node)
			}
		}
		return nil
	})
}

// TestUninstallLeavesNothing: the README's uninstall
// (`kubectl delete -k`, then deploy/uninstall's DaemonSet until every node
// is clean) leaves no weft conflist, plugin, link, route, state file or
// address store on any node, and a second install afterwards works.
func TestUninstallLeavesNothing(t *testing.T) {
	needCluster(t)
	needInstall(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// What the uninstall must remove is there now: the test can fail.
	for _, n := range live() {
		if left := weftLeftovers(ctx, n); len(left) < 5 {
			t.Fatalf("node %s before the uninstall: only %v of weft's files and links found", n.Name, left)
		}
	}
	install.Lock()
	defer install.Unlock()
	if out, err := lab.Kubectl(ctx, "delete", "-k", install.dir, "--wait=true", "--timeout=3m"); err != nil {
		t.Fatalf("kubectl delete -k: %v", err)
	} else {
		t.Logf("kubectl delete -k %s:\n%s", install.dir, out)
	}
	install.done = false
	// The control-plane machine is no Kubernetes node: its agent goes by hand.
	lab.StopCPAgent()

	un := applyKustomization(t, ctx, "uninstall")
	if out, err := lab.Kubectl(ctx, "-n", "weft-uninstall", "rollout", "status", "daemonset/weft-uninstall", "--timeout=3m"); err != nil {
		t.Fatalf("uninstall rollout: %v", err)
	} else {
		t.Log(strings.TrimSpace(out))
	}
	list, err := lab.Client.CoreV1().Pods("weft-uninstall").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != len(live()) {
		t.Errorf("%d uninstall pods, want one on each of %d nodes", len(list.Items), len(live()))
	}
	for _, p := range list.Items {
		work, _ := lab.Kubectl(ctx, "-n", "weft-uninstall", "logs", p.Name, "-c", "uninstall")
		verify, _ := lab.Kubectl(ctx, "-n", "weft-uninstall", "logs", p.Name, "-c", "verify")
		t.Logf("uninstall on %s:\n%s\nverify:\n%s", p.Spec.NodeName, strings.TrimSpace(work), strings.TrimSpace(verify))
		if !strings.Contains(verify, "nothing of weft's left to remove") {
			t.Errorf("node %s: the second pass found more to remove:\n%s", p.Spec.NodeName, verify)
		}
	}
	if out, err := lab.Kubectl(ctx, "delete", "-k", un, "--wait=true", "--timeout=2m"); err != nil {
		t.Fatalf("kubectl delete -k %s: %v", un, err)
	} else {
		t.Log(strings.TrimSpace(out))
	}
	for _, n := range live() {
		if left := weftLeftovers(ctx, n); len(left) > 0 {
			t.Errorf("node %s after the uninstall: %s", n.Name, strings.Join(left, "; "))
		}
	}

	// Installing again works from the clean nodes.
	start := time.Now()
	applyInstall(t, ctx)
	waitInstalled(t, ctx, 3*time.Minute)
	install.done = true
	waitFor(t, 60*time.Second, "the mesh formed again", func() error {
		r, err := lab.CPAgent.Status()
		if err != nil {
			return err
		}
		alive := 0
		for _, m := range r.Members {
			if m.State == "alive" && m.OwnsBlock {
				alive++
			}
		}
		if alive != len(live())+1 {
			return fmt.Errorf("%d alive members with a block, want %d", alive, len(live())+1)
		}
		return nil
	})
	t.Logf("installed again in %v", time.Since(start).Round(time.Second))
}
