package k8stest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/internal/kubeapi"
	"github.com/weftnet/weft/sidecar/inject"
)

// TestKubeAPIClient checks weft's own Kubernetes client (internal/kubeapi,
// which the weft binary uses instead of client-go) against the real
// apiserver, with the service accounts deploy/ installs: its four requests
// decode to what client-go reads, failures carry the code and the
// apiserver's message, an update with a stale resourceVersion is a
// conflict, the token file is read again for every request, and the
// kubeconfig forms it accepts reach the apiserver.
func TestKubeAPIClient(t *testing.T) {
	cp := Start(t)
	install(t, cp, "")
	createNodes(t, cp, []testNode{
		{name: "linux-1", ip: "192.0.2.1", ready: "True"},
		{name: "linux-2", ip: "192.0.2.2", ready: "False"},
		{name: "windows", ip: "192.0.2.3", ready: "True", labels: map[string]string{"kubernetes.io/os": "windows"}},
	})
	cp.CreateNamespace(t, "shop", map[string]string{inject.LabelInject: inject.LabelInjectEnabled})
	agentToken := cp.ServiceAccountToken(t, "weft-system", "weft-agent")
	injectorToken := cp.ServiceAccountToken(t, "weft-system", "weft-injector")
	agent, injector := cp.APIClientFor(t, agentToken), cp.APIClientFor(t, injectorToken)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("list nodes", func(t *testing.T) {
		// Protobuf from the watch cache here, JSON through client-go.
		got, err := agent.ListNodes(ctx, "kubernetes.io/os=linux")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, n := range got.Items {
			names = append(names, n.Name)
			want, err := cp.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(&n, want) {
				t.Errorf("node %s decoded differently from client-go's (-client-go +kubeapi):\n%s", n.Name, cmp.Diff(want, &n))
			}
		}
		if diff := cmp.Diff([]string{"linux-1", "linux-2"}, sorted(names)); diff != "" {
			t.Errorf("nodes (-want +got):\n%s", diff)
		}
		all, err := agent.ListNodes(ctx, "")
		if err != nil || len(all.Items) != 3 {
			t.Errorf("all nodes: %d, %v; want 3", len(all.Items), err)
		}
	})

	t.Run("get namespace", func(t *testing.T) {
		ns, err := injector.GetNamespace(ctx, "shop")
		if err != nil {
			t.Fatal(err)
		}
		if ns.Labels[inject.LabelInject] != inject.LabelInjectEnabled {
			t.Errorf("labels %v", ns.Labels)
		}
		_, err = injector.GetNamespace(ctx, "nowhere")
		if !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), "404 Not Found") || !strings.Contains(err.Error(), `namespaces "nowhere" not found`) {
			t.Errorf("missing namespace: %v, want 404 with the apiserver's message", err)
		}
		_, err = agent.GetNamespace(ctx, "shop")
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "403 Forbidden") || !strings.Contains(err.Error(), "weft-agent") {
			t.Errorf("agent's token: %v, want 403 naming the service account", err)
		}
		t.Logf("get namespace with the agent's token: %v", err)
	})

	t.Run("update webhook configuration", func(t *testing.T) {
		certs, err := inject.GenerateCerts("weft-injector", "weft-system", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		mwc, err := injector.GetMutatingWebhookConfiguration(ctx, "weft-injector")
		if err != nil {
			t.Fatal(err)
		}
		stale := mwc.DeepCopy()
		for i := range mwc.Webhooks {
			mwc.Webhooks[i].ClientConfig.CABundle = certs.CA
		}
		stored, err := injector.UpdateMutatingWebhookConfiguration(ctx, mwc)
		if err != nil {
			t.Fatal(err)
		}
		if stored.ResourceVersion == mwc.ResourceVersion {
			t.Errorf("resourceVersion %s unchanged by the update", stored.ResourceVersion)
		}
		back, err := cp.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "weft-injector", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back.Webhooks[0].ClientConfig.CABundle, certs.CA) {
			t.Error("caBundle not stored")
		}
		// client-go drops the TypeMeta of typed objects; kubeapi keeps it.
		stored.TypeMeta = metav1.TypeMeta{}
		if !equality.Semantic.DeepEqual(stored, back) {
			t.Errorf("update's answer differs from what client-go reads (-client-go +kubeapi):\n%s", cmp.Diff(back, stored))
		}
		var managers []string
		for _, m := range back.ManagedFields {
			managers = append(managers, m.Manager)
		}
		if !strings.Contains(strings.Join(managers, " "), "weft-test") {
			t.Errorf("field managers %v, want the client's user agent (weft-test) among them", managers)
		}

		stale.Webhooks[0].ClientConfig.CABundle = []byte("lost update")
		_, err = injector.UpdateMutatingWebhookConfiguration(ctx, stale)
		if !errors.Is(err, kubeapi.ErrConflict) || !strings.Contains(err.Error(), "409 Conflict") || !strings.Contains(err.Error(), "has been modified") {
			t.Errorf("update with a stale resourceVersion: %v, want a 409 conflict", err)
		}
		_, err = injector.GetMutatingWebhookConfiguration(ctx, "someone-elses")
		if !apierrors.IsForbidden(err) {
			t.Errorf("another configuration: %v, want forbidden", err)
		}
	})

	t.Run("token file read for every request", func(t *testing.T) {
		tokenFile := filepath.Join(t.TempDir(), "token")
		writeToken := func(tok string) {
			t.Helper()
			if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		writeToken(injectorToken)
		c, err := kubeapi.New(kubeapi.Config{Server: cp.URL, CAFile: cp.CAFile, TokenFile: tokenFile, Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseIdleConnections()
		if _, err := c.ListNodes(ctx, ""); !apierrors.IsForbidden(err) {
			t.Fatalf("as the injector: %v, want forbidden", err)
		}
		// The kubelet rotates a projected token by replacing the file.
		writeToken(agentToken)
		if _, err := c.ListNodes(ctx, ""); err != nil {
			t.Errorf("after the token file changed to the agent's: %v", err)
		}
	})

	t.Run("kubeconfig", func(t *testing.T) {
		ca, err := os.ReadFile(cp.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		other, err := inject.GenerateCerts("x", "y", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name, cluster string
			wantErr       string
		}{
			{"CA file", "certificate-authority: " + cp.CAFile, ""},
			{"CA data", "certificate-authority-data: " + base64.StdEncoding.EncodeToString(ca), ""},
			{"insecure", "insecure-skip-tls-verify: true", ""},
			{"another CA", "certificate-authority-data: " + base64.StdEncoding.EncodeToString(other.CA), "certificate signed by unknown authority"},
		} {
			t.Run(c.name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "kubeconfig")
				kc := fmt.Sprintf("clusters:\n- name: c\n  cluster:\n    server: %s\n    %s\nusers:\n- name: u\n  user:\n    token: %s\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
					cp.URL, c.cluster, agentToken)
				if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
					t.Fatal(err)
				}
				cfg, err := kubeapi.LoadKubeconfig(path)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Timeout = 30 * time.Second
				client, err := kubeapi.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer client.CloseIdleConnections()
				_, err = client.ListNodes(ctx, "")
				if c.wantErr == "" && err != nil {
					t.Errorf("list nodes: %v", err)
				}
				if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
					t.Errorf("list nodes: %v, want an error with %q", err, c.wantErr)
				}
			})
		}
	})
}
