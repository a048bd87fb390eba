package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/harness/k8stest"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// APIServerAddr is the apiserver's address on the underlay: a second
// address of the control-plane node, and the first of the service range, so
// the `kubernetes` Service's ClusterIP is the apiserver itself and pods and
// host-network agents reach it without a kube-proxy.
const (
	APIServerAddr = "198.19.255.1"
	serviceRange  = "198.19.255.0/24"
	apiserverPort = "443"
)

// AdminUser is the user of the admin kubeconfig (in system:masters).
const AdminUser = "weft-e2e-admin"

// startControlPlane runs etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in the control-plane node's namespace and waits until the
// apiserver is ready.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	dir := filepath.Join(c.Dir, "cp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if _, err := c.CP.Run(ctx, "ip", "addr", "add", APIServerAddr+"/15", "dev", "eth0"); err != nil {
		return err
	}
	saKey, err := c.writeControlPlaneFiles(dir)
	if err != nil {
		return err
	}
	if err := c.startEtcd(ctx, dir); err != nil {
		return err
	}
	api, err := c.startAPIServer(ctx, dir, saKey)
	if err != nil {
		return err
	}
	if err := c.waitAPIServer(ctx, api); err != nil {
		return err
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.Config.Host, c.CAFile, c.adminToken); err != nil {
		return err
	}
	return c.startControllers(ctx, dir, saKey)
}

// writeControlPlaneFiles writes the apiserver's token file (the admin's
// token and one per node), its audit policy and the service-account
// signing key into dir, and returns the key's path.
func (c *Cluster) writeControlPlaneFiles(dir string) (saKey string, err error) {
	c.adminToken = k8stest.RandomHex(16)
	var tokens strings.Builder
	fmt.Fprintf(&tokens, "%s,%s,%s,\"system:masters\"\n", c.adminToken, AdminUser, AdminUser)
	for i := 1; i <= len(c.Lab.Nodes); i++ {
		name := nodeName(i)
		tok := k8stest.RandomHex(16)
		c.nodeTokens[name] = tok
		fmt.Fprintf(&tokens, "%s,system:node:%s,system:node:%s,\"system:nodes\"\n", tok, name, name)
	}
	files := map[string]string{
		"tokens.csv": tokens.String(),
		// The controllers run with their own credentials, so only the
		// pods' service accounts are logged.
		"audit-policy.yaml": k8stest.AuditPolicy,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return "", err
		}
	}
	saKey = filepath.Join(dir, "sa.key")
	if err := k8stest.WriteECKey(saKey); err != nil {
		return "", err
	}
	c.AuditLog = filepath.Join(dir, "audit.log")
	return saKey, nil
}

// startEtcd runs a one-member etcd on the node's loopback.
func (c *Cluster) startEtcd(ctx context.Context, dir string) error {
	_, err := c.startProcess(ctx, c.CP.Path(), "etcd", "etcd", []string{
		"--name=weft-e2e",
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=weft-e2e=http://127.0.0.1:2380",
		"--initial-cluster-state=new",
		"--logger=zap", "--log-level=warn",
		// A lab on a shared 2-core machine: no fsync per commit.
		"--unsafe-no-fsync",
	}, filepath.Join(dir, "etcd.log"))
	return err
}

// startAPIServer runs kube-apiserver on APIServerAddr and sets c's admin
// client configuration for it. The flag list is one per line, as in a
// manifest.
func (c *Cluster) startAPIServer(ctx context.Context, dir, saKey string) (*proc, error) {
	certDir := filepath.Join(dir, "certs")
	api, err := c.startProcess(ctx, c.CP.Path(), "kube-apiserver", filepath.Join(c.cfg.BinDir, "kube-apiserver"), []string{
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0",
		"--advertise-address=" + APIServerAddr,
		"--secure-port=" + apiserverPort,
		"--cert-dir=" + certDir,
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=" + serviceRange,
		"--kubelet-preferred-address-types=InternalIP",
		// Webhooks (the injector) and aggregated APIs are called at their
		// pods' addresses, not the Service's ClusterIP: the lab has no
		// kube-proxy. The control-plane machine's weft agent routes them.
		"--enable-aggregator-routing=true",
		"--audit-policy-file=" + filepath.Join(dir, "audit-policy.yaml"),
		"--audit-log-path=" + c.AuditLog,
		"--audit-log-mode=blocking",
		"--profiling=false",
	}, filepath.Join(dir, "kube-apiserver.log"))
	if err != nil {
		return nil, err
	}
	c.CAFile = filepath.Join(certDir, "apiserver.crt")
	c.Config = &rest.Config{
		Host:            "https://" + APIServerAddr + ":" + apiserverPort,
		BearerToken:     c.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.CAFile},
		Timeout:         30 * time.Second,
		QPS:             100,
		Burst:           200,
		// The test runs in the root namespace, the apiserver in the
		// control-plane node's: every connection is made from in there.
		Dial: c.CP.DialContext,
	}
	return api, nil
}

// startControllers runs kube-controller-manager and kube-scheduler with
// the admin kubeconfig.
func (c *Cluster) startControllers(ctx context.Context, dir, saKey string) error {
	for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
		args := []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
		}
		if name == "kube-controller-manager" {
			args = append(args,
				"--service-account-private-key-file="+saKey,
				"--root-ca-file="+c.CAFile,
				"--use-service-account-credentials=false",
				"--cluster-signing-duration=0s",
				// The lab's nodes die on purpose: notice it in seconds.
				"--node-monitor-grace-period=20s",
			)
		}
		if _, err := c.startProcess(ctx, c.CP.Path(), name, filepath.Join(c.cfg.BinDir, name), args, filepath.Join(dir, name+".log")); err != nil {
			return err
		}
	}
	return nil
}

// waitAPIServer polls /readyz (at most 120 s: seconds on an idle machine,
// far more while builds share it).
func (c *Cluster) waitAPIServer(ctx context.Context, api *proc) error {
	rc := rest.CopyConfig(c.Config)
	rc.Timeout = 5 * time.Second
	var client *http.Client
	deadline := time.Now().Add(120 * time.Second)
	last := "no serving certificate yet"
	for time.Now().Before(deadline) {
		if client == nil {
			if _, err := os.Stat(c.CAFile); err == nil {
				var err error
				if client, err = rest.HTTPClientFor(rc); err != nil {
					return err
				}
			}
		}
		if client != nil {
			resp, err := client.Get(c.Config.Host + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
				last = resp.Status
			} else {
				last = err.Error()
			}
		}
		select {
		case <-api.done:
			return fmt.Errorf("kube-apiserver exited before it was ready; its log:\n%s", k8stest.Tail(api.log))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("kube-apiserver not ready after 120 s (last: %s); its log:\n%s", last, k8stest.Tail(api.log))
}

func writeKubeconfig(path, server, caFile, token string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: weft-e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: user
  user:
    token: %s
contexts:
- name: weft-e2e
  context: {cluster: weft-e2e, user: user}
current-context: weft-e2e
`, server, caFile, token)
	return os.WriteFile(path, []byte(cfg), 0o600)
}
