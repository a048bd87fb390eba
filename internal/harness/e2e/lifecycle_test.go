package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/sidecar/inject"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// installInjector applies deploy/ (both modes) over the host install and
// waits for the injector and its webhook's caBundle.
func installInjector(t *testing.T, ctx context.Context) {
	t.Helper()
	install.Lock()
	install.dir = applyKustomization(t, ctx, "both")
	install.Unlock()
	waitFor(t, 2*time.Minute, "the injector available with its caBundle set", func() error {
		d, err := lab.Client.AppsV1().Deployments("weft-system").Get(ctx, "weft-injector", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.AvailableReplicas < 1 {
			return fmt.Errorf("weft-injector: %d available", d.Status.AvailableReplicas)
		}
		wh, err := lab.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "weft-injector", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, w := range wh.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				return fmt.Errorf("webhook %s: no caBundle yet", w.Name)
			}
		}
		return nil
	})
}

// copyGossipSecret makes the README's copy of the gossip key Secret in ns,
// for the sidecars injected there.
func copyGossipSecret(t *testing.T, ctx context.Context, ns string) {
	t.Helper()
	src, err := lab.Client.CoreV1().Secrets("weft-system").Get(ctx, "weft-gossip", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dst := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: src.Name, Namespace: ns}, Data: src.Data}
	if _, err := lab.Client.CoreV1().Secrets(ns).Create(ctx, dst, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// readyPod waits for the one pod of app in ns to be Ready.
func readyPod(t *testing.T, ctx context.Context, ns, app string, timeout time.Duration) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	waitFor(t, timeout, fmt.Sprintf("a Ready %s pod in %s", app, ns), func() error {
		list, err := lab.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return err
		}
		if len(list.Items) != 1 {
			return fmt.Errorf("%d pods", len(list.Items))
		}
		pod = list.Items[0]
		if !hasPodCondition(&pod, corev1.PodReady) {
			return fmt.Errorf("pod %s on %q not Ready: %s %s", pod.Name, pod.Spec.NodeName, pod.Status.Phase, pod.Status.Message)
		}
		return nil
	})
	return pod
}

func hasPodCondition(p *corev1.Pod, typ corev1.PodConditionType) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// checkInjected checks the pod as the webhook left it: the annotation, the
// native sidecar (an init container that keeps running), unprivileged, and
// the proxy variables in the app.
func checkInjected(t *testing.T, p corev1.Pod) {
	t.Helper()
	if _, ok := p.Annotations[inject.AnnotationInjected]; !ok {
		t.Errorf("pod %s has no %s annotation: not injected", p.Name, inject.AnnotationInjected)
	}
	if p.Spec.HostNetwork {
		t.Errorf("pod %s: hostNetwork", p.Name)
	}
	var car *corev1.Container
	for i := range p.Spec.InitContainers {
		if p.Spec.InitContainers[i].Name == inject.SidecarName {
			car = &p.Spec.InitContainers[i]
		}
	}
	if car == nil {
		t.Fatalf("pod %s: no init container %s", p.Name, inject.SidecarName)
	}
	if car.RestartPolicy == nil || *car.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar %s is not a native sidecar (restartPolicy %v)", car.Name, car.RestartPolicy)
	}
	sc := car.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("sidecar without a securityContext")
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0:
		t.Errorf("sidecar may run as root: %+v", sc)
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("sidecar privileged")
	case sc.Capabilities == nil || len(sc.Capabilities.Add) > 0:
		t.Errorf("sidecar capabilities %+v, want none added", sc.Capabilities)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("sidecar may escalate privileges")
	}
	for _, v := range car.VolumeMounts {
		for _, vol := range p.Spec.Volumes {
			if vol.Name == v.Name && vol.HostPath != nil {
				t.Errorf("sidecar mounts hostPath %s", vol.HostPath.Path)
			}
		}
	}
	var started bool
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name == inject.SidecarName {
			started = s.Ready && s.State.Running != nil
		}
	}
	if !started {
		t.Errorf("sidecar not running and ready: %+v", p.Status.InitContainerStatuses)
	}
	var proxy bool
	for _, e := range p.Spec.Containers[0].Env {
		proxy = proxy || e.Name == "ALL_PROXY"
	}
	if !proxy {
		t.Errorf("app container without ALL_PROXY")
	}
}

// agentStatus is `weft status --json` in an agent pod.
func agentStatus(ctx context.Context, p corev1.Pod) (api.Report, error) {
	var r api.Report
	out, err := lab.Kubectl(ctx, "exec", "-n", "weft-system", p.Name, "-c", "agent", "--", "weft", "status", "--json")
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return r, fmt.Errorf("weft status --json: %w: %s", err, out)
	}
	return r, nil
}

// blockHolders maps each block held by a member (alive or failed within
// the TTL) to its holder, in one agent's view.
func blockHolders(r api.Report) map[string]string {
	h, _ := distinctBlocks(r)
	return h
}

// distinctBlocks is blockHolders, with an error when two members hold the
// same block.
func distinctBlocks(r api.Report) (map[string]string, error) {
	h := map[string]string{}
	var dup []string
	for _, m := range r.Members {
		if !m.OwnsBlock || m.Block == "" || strings.HasSuffix(m.Block, "/32") {
			continue
		}
		if o, ok := h[m.Block]; ok {
			dup = append(dup, fmt.Sprintf("%s held by %s and %s", m.Block, o, m.Name))
		}
		h[m.Block] = m.Name
	}
	if len(dup) > 0 {
		return h, fmt.Errorf("duplicate blocks: %s", strings.Join(dup, "; "))
	}
	return h, nil
}

// stream is `testapp stream` running in a pod, through `kubectl exec -i`.
type stream struct {
	stdin io.WriteCloser
	done  chan error
	mu    sync.Mutex
	out   bytes.Buffer
}

// startStream starts a TCP stream from pod from to pod to.
func startStream(t *testing.T, ctx context.Context, ns string, from, to corev1.Pod) *stream {
	t.Helper()
	cmd := lab.KubectlCommand(ctx, "exec", "-i", "-n", ns, from.Name, "--", "testapp", "stream", to.Status.PodIP)
	s := &stream{done: make(chan error, 1)}
	var err error
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			s.mu.Lock()
			s.out.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
		}
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		s.done <- err
	}()
	t.Cleanup(func() { s.stdin.Close() })
	return s
}

// roundTrips is the last count the stream printed.
func (s *stream) roundTrips() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := strings.Fields(lastLine(s.out.String()))
	if len(f) != 3 || f[0] != "stream" {
		return 0
	}
	n, _ := strconv.Atoi(f[2])
	return n
}

// waitRoundTrips waits until the stream has made n round trips.
func (s *stream) waitRoundTrips(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d round trips on the stream", n), func() error {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("the stream ended: %v\n%s", err, s.output())
		default:
		}
		if got := s.roundTrips(); got < n {
			return fmt.Errorf("%d round trips", got)
		}
		return nil
	})
}

func (s *stream) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// stop closes the stream's stdin (testapp ends with success if the
// connection held) and returns its output and exit.
func (s *stream) stop() (string, error) {
	s.stdin.Close()
	select {
	case err := <-s.done:
		time.Sleep(100 * time.Millisecond) // the last lines
		return s.output(), err
	case <-time.After(30 * time.Second):
		return s.output(), fmt.Errorf("the stream did not end within 30 s of its stdin closing")
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// watchNodesReady polls the live nodes every second until ctx ends; the
// returned func lists every time one was not Ready.
func watchNodesReady(ctx context.Context) func() []string {
	var mu sync.Mutex
	var bad []string
	nodes := append([]*Node(nil), live()...)
	go func() {
		for ctx.Err() == nil {
			for _, n := range nodes {
				node, err := lab.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
				if err == nil && !Ready(node) {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s node %s not Ready", time.Now().Format("15:04:05"), n.Name))
					mu.Unlock()
				}
			}
			time.Sleep(time.Second)
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), bad...)
	}
}

// weftLeftovers lists what of weft is on node n: files, links, routes.
func weftLeftovers(ctx context.Context, n *Node) []string {
	var left []string
	for _, p := range []string{
		"/etc/cni/net.d/10-weft.conflist", "/opt/cni/bin/weft",
		"/var/lib/weft/state.json", "/var/lib/weft/rejoin.json", "/var/lib/weft/serf.snapshot",
		"/run/weft/agent.sock", "/var/run/wireguard/weft0.sock",
		"/var/lib/cni/networks/weft",
	} {
		if _, err := os.Lstat(n.HostPath(p)); err == nil {
			left = append(left, "file "+p)
		}
	}
	links, err := n.Net.Run(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return append(left, err.Error())
	}
	for _, l := range strings.Split(links, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
		if name == "weft0" || strings.HasPrefix(name, "wft") {
			left = append(left, "link "+name)
		}
	}
	// proto 0x77: weft's routes (agent/routes.go, cni).
	routes, err := n.Net.Run(ctx, "ip", "route", "show", "proto", "119")
	if err != nil {
		return append(left, err.Error())
	}
	for _, r := range strings.Split(strings.TrimSpace(routes), "\n") {
		if r != "" {
			left = append(left, "route "+r)
		}
	}
	sort.Strings(left)
	return left
}

// sameFile reports whether two files have the same content.
func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	sum := func(p string) [32]byte {
		d, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(d)
	}
	return sum(a) == sum(b)
}

// runBenchJob runs deploy/bench: the server pod first, then the client Job
// aimed at the server pod's address (the lab has no cluster DNS), and
// returns the Job's output.
func runBenchJob(t *testing.T, ctx context.Context) string {
	t.Helper()
	dir := kustomization(t, "bench")
	manifests, err := lab.Kubectl(ctx, "kustomize", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		lab.Kubectl(context.Background(), "delete", "-k", dir, "--ignore-not-found", "--wait=false")
	})
	if _, err := lab.KubectlInput(ctx, manifests, "apply", "-f", "-", "-l", "app.kubernetes.io/component=server"); err != nil {
		t.Fatal(err)
	}
	var server corev1.Pod
	waitFor(t, 2*time.Minute, "the bench server Ready", func() error {
		p, err := lab.Client.CoreV1().Pods("weft-system").Get(ctx, "weft-bench-server", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !hasPodCondition(p, corev1.PodReady) {
			return fmt.Errorf("bench server %s", p.Status.Phase)
		}
		server = *p
		return nil
	})
	const dnsTarget = "--target=weft-bench-server.weft-system.svc:5201"
	if !strings.Contains(manifests, dnsTarget) {
		t.Fatalf("deploy/bench's Job has no %s", dnsTarget)
	}
	manifests = strings.Replace(manifests, dnsTarget, "--target="+server.Status.PodIP+":5201", 1)
	if _, err := lab.KubectlInput(ctx, manifests, "apply", "-f", "-", "-l", "app.kubernetes.io/component=client"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "the bench Job complete", func() error {
		j, err := lab.Client.BatchV1().Jobs("weft-system").Get(ctx, "weft-bench", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if j.Status.Failed > 0 {
			logs, _ := lab.Kubectl(ctx, "-n", "weft-system", "logs", "job/weft-bench")
			t.Fatalf("bench Job: %d failed pods:\n%s", j.Status.Failed, logs)
		}
		if j.Status.Succeeded < 1 {
			return fmt.Errorf("bench Job: %d active", j.Status.Active)
		}
		return nil
	})
	out, err := lab.Kubectl(ctx, "-n", "weft-system", "logs", "job/weft-bench")
	if err != nil {
		t.Fatal(err)
	}
	j, _ := lab.Client.BatchV1().Jobs("weft-system").Get(ctx, "weft-bench", metav1.GetOptions{})
	if j != nil {
		pods, _ := lab.Client.CoreV1().Pods("weft-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=client"})
		for _, p := range pods.Items {
			if p.Spec.NodeName == server.Spec.NodeName {
				t.Errorf("bench client on the server's node %s: not across nodes", p.Spec.NodeName)
			}
		}
	}
	return strings.TrimSpace(out)
}

// benchUnderlay runs the same `weft bench` client and server on two nodes'
// own addresses (as hostNetwork pods would), without weft in the path.
func benchUnderlay(t *testing.T, ctx context.Context) string {
	t.Helper()
	a, b := live()[0], live()[1]
	weft := filepath.Join(lab.Dir, "weft")
	addr := a.Net.Addr().String() + ":5202"
	srvCtx, stop := context.WithCancel(ctx)
	srv := a.Net.Command(srvCtx, weft, "bench", "server", "--listen="+addr)
	if err := srv.Start(); err != nil {
		stop()
		t.Fatal(err)
	}
	defer func() {
		stop()
		srv.Wait()
	}()
	waitFor(t, 10*time.Second, "the underlay bench server listening", func() error {
		c, err := b.Net.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
	out, err := b.Net.Run(ctx, weft, "bench", "client", "--target="+addr, "--mode=underlay", "--streams=1,4", "--duration=10s")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// udpBytes adds up the "length N" of tcpdump's UDP summary lines.
func udpBytes(lines []string) int {
	total := 0
	for _, l := range lines {
		i := strings.LastIndex(l, "length ")
		if i < 0 {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(l[i+len("length "):]))
		if err == nil {
			total += n
		}
	}
	return total
}
