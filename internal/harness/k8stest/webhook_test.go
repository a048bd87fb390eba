package k8stest

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weftnet/weft/internal/kubeapi"
	"github.com/weftnet/weft/sidecar/inject"
)

// webhookConfig is the rendered MutatingWebhookConfiguration of deploy/,
// pointed at url instead of the in-cluster Service: the apiserver here has
// no cluster network to reach a Service through.
func webhookConfig(t *testing.T, url string) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	for _, o := range renderDeploy(t, "") {
		if o.GetKind() != "MutatingWebhookConfiguration" {
			continue
		}
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &mwc); err != nil {
			t.Fatal(err)
		}
		for i := range mwc.Webhooks {
			cc := &mwc.Webhooks[i].ClientConfig
			cc.URL = &[]string{url + *cc.Service.Path}[0]
			cc.Service = nil
		}
		return &mwc
	}
	t.Fatal("deploy/ renders no MutatingWebhookConfiguration")
	return nil
}

// runInjector serves the injection webhook on 127.0.0.1 as `weft inject
// serve --self-signed` does: Bootstrap makes the CA and serving
// certificate (with 127.0.0.1 in it, the URL's host) and sets the caBundle
// through the injector's own service account; namespace labels are read
// with a GET through it too. It returns a func that stops the webhook and
// waits for it.
func runInjector(t *testing.T, client *kubeapi.Client, ln net.Listener) (stop func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir := filepath.Join(t.TempDir(), "tls")
	ctx, cancel := context.WithCancel(context.Background())
	bctx, bcancel := context.WithTimeout(ctx, 30*time.Second)
	defer bcancel()
	_, err := inject.Bootstrap(bctx, inject.BootstrapConfig{
		Dir: dir, Service: "weft-injector", Namespace: "weft-system",
		WebhookConfig: "weft-injector", Client: client, ExtraHosts: []string{"127.0.0.1"},
	}, time.Now(), log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	// As cmd/weft's namespaceLabels: one GET, 3 s timeout.
	nsLabels := func(ctx context.Context, name string) (map[string]string, error) {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		ns, err := client.GetNamespace(ctx, name)
		if err != nil {
			return nil, err
		}
		return ns.Labels, nil
	}
	wh, err := inject.NewWebhook(inject.DefaultConfig(), nsLabels, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/inject", wh)
	done := make(chan error, 1)
	go func() { done <- inject.ServeTLS(ctx, ln, inject.ServerConfig{CertDir: dir, Handler: mux}, log) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("webhook: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

func testPod(name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/app:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
		}}},
	}
}

// TestWebhookInjectsThroughAPIServer: the injector,
// registered with deploy/'s MutatingWebhookConfiguration (namespace opt-in,
// failurePolicy Ignore), runs in this process on 127.0.0.1 with the CA it
// bootstrapped; pods created through the apiserver are stored with the
// sidecar in a labelled namespace and unchanged elsewhere, and while the
// webhook is down pods are still created.
func TestWebhookInjectsThroughAPIServer(t *testing.T) {
	cp := Start(t)
	install(t, cp, "overlays/sidecar")
	injector := cp.APIClientFor(t, cp.ServiceAccountToken(t, "weft-system", "weft-injector"))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "https://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Replace the installed configuration with the same one pointed at the
	// URL (a webhook's clientConfig is service or url, not both).
	mwcs := cp.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if err := mwcs.Delete(ctx, "weft-injector", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	mwc := webhookConfig(t, url)
	if got := *mwc.Webhooks[0].FailurePolicy; got != admissionregistrationv1.Ignore {
		t.Fatalf("deploy/'s failurePolicy is %s; this test (and the README) expect Ignore", got)
	}
	if _, err := mwcs.Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stop := runInjector(t, injector, ln)
	got, err := mwcs.Get(ctx, "weft-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Webhooks[0].ClientConfig.CABundle) == 0 {
		t.Fatal("Bootstrap did not set the caBundle")
	}

	cp.CreateNamespace(t, "shop", map[string]string{inject.LabelInject: inject.LabelInjectEnabled})
	cp.CreateNamespace(t, "plain", nil)
	create := func(ns string, pod *corev1.Pod) *corev1.Pod {
		t.Helper()
		out, err := cp.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod %s/%s: %v", ns, pod.Name, err)
		}
		// Read back what was stored, not what Create answered.
		if out, err = cp.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	injected := func(p *corev1.Pod) bool {
		return len(p.Spec.InitContainers) > 0 && p.Spec.InitContainers[0].Name == inject.SidecarName &&
			p.Annotations[inject.AnnotationInjected] != ""
	}

	p := create("shop", testPod("app", nil))
	if !injected(p) {
		t.Fatalf("pod in labelled namespace stored without the sidecar: init containers %v, annotations %v", names(p.Spec.InitContainers), p.Annotations)
	}
	if rp := p.Spec.InitContainers[0].RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar stored without restartPolicy Always (not a native sidecar): %v", rp)
	}
	if n := weftVolumes(p); n != 3 {
		t.Errorf("injected pod has %d weft volumes, want 3 (gossip key, pod info, state)", n)
	}
	if len(p.Spec.Containers) != 1 || p.Spec.Containers[0].Name != "app" {
		t.Errorf("app containers changed: %v", names(p.Spec.Containers))
	}

	for _, c := range []struct{ ns, name string }{{"plain", "app"}, {"shop", "opted-out"}} {
		var ann map[string]string
		if c.name == "opted-out" {
			ann = map[string]string{inject.AnnotationInject: "false"}
		}
		p := create(c.ns, testPod(c.name, ann))
		if injected(p) || len(p.Spec.InitContainers) != 0 || len(p.Spec.Containers[0].Env) != 0 || weftVolumes(p) != 0 {
			t.Errorf("pod %s/%s changed: init containers %v, env %v, annotations %v", c.ns, c.name,
				names(p.Spec.InitContainers), p.Spec.Containers[0].Env, p.Annotations)
		}
	}

	// The webhook down: failurePolicy Ignore admits pods without it, and
	// within the configured timeout (the port refuses at once).
	stop()
	start := time.Now()
	p = create("shop", testPod("while-down", nil))
	if injected(p) {
		t.Errorf("pod created while the webhook was down has the sidecar")
	}
	if d := time.Since(start); d > time.Duration(*mwc.Webhooks[0].TimeoutSeconds)*time.Second+5*time.Second {
		t.Errorf("pod creation with the webhook down took %s", d)
	}
	t.Logf("with the webhook down, pod created unchanged in %s", time.Since(start).Round(time.Millisecond))
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// weftVolumes counts the volumes the injector adds (the apiserver's
// ServiceAccount admission adds a token volume of its own to every pod).
func weftVolumes(p *corev1.Pod) int {
	n := 0
	for _, v := range p.Spec.Volumes {
		if strings.HasPrefix(v.Name, "weft-") {
			n++
		}
	}
	return n
}
