package k8stest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weftnet/weft/internal/kubeapi"
)

// AdminUser is the user of ControlPlane.Config: in system:masters, so RBAC
// allows it everything.
const AdminUser = "weft-test-admin"

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	// Config is an admin's client configuration.
	Config *rest.Config
	// Client is an admin's client.
	Client kubernetes.Interface
	// URL is the apiserver's https URL on 127.0.0.1.
	URL string
	// CAFile verifies the apiserver's serving certificate.
	CAFile string
	// AuditLog holds one JSON event per request made by a service account
	// (AuditEvents reads it).
	AuditLog string
	dir      string
}

// Binaries says where the control plane's programs are: $WEFT_KUBE_APISERVER
// or bin/kube-apiserver of the module, and $WEFT_ETCD or etcd on $PATH.
func Binaries() (apiserver, etcd string, err error) {
	apiserver = os.Getenv("WEFT_KUBE_APISERVER")
	if apiserver == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", "", err
		}
		apiserver = filepath.Join(root, "bin", "kube-apiserver")
	}
	if _, err := os.Stat(apiserver); err != nil {
		return "", "", fmt.Errorf("kube-apiserver: %w: run `make apiserver` first (builds k8s.io/kubernetes/cmd/kube-apiserver from the Go module proxy into bin/; about 10 minutes the first time, cached after)", err)
	}
	etcd = os.Getenv("WEFT_ETCD")
	if etcd == "" {
		if etcd, err = exec.LookPath("etcd"); err != nil {
			return "", "", fmt.Errorf("etcd: %w: install Debian's etcd-server (`make deps` does)", err)
		}
	}
	return apiserver, etcd, nil
}

// moduleRoot is the directory of the main module's go.mod, found upwards
// from the working directory (a package's directory under go test).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/weftnet/weft\n")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod of github.com/weftnet/weft above %s", dir)
		}
	}
}

// RequireBinaries skips the test under -short (these tests start a real
// apiserver and take seconds each) and fails it, saying what to run, when
// kube-apiserver or etcd is missing: `make test` builds and installs them,
// so a missing one is a broken setup, not a reason to pass.
func RequireBinaries(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs a real kube-apiserver and etcd")
	}
	apiserver, etcd, err := Binaries()
	if err != nil {
		t.Fatal(err)
	}
	return apiserver, etcd
}

// Start runs etcd and kube-apiserver for t, waits until the apiserver is
// ready, and stops both (and removes their files) when t ends.
func Start(t testing.TB) *ControlPlane {
	t.Helper()
	apiserverBin, etcdBin := RequireBinaries(t)
	dir := t.TempDir()
	cp := &ControlPlane{dir: dir, AuditLog: filepath.Join(dir, "audit.log")}

	etcdURL := startEtcd(t, etcdBin, dir)

	adminToken := RandomHex(16)
	files := map[string]string{
		"tokens.csv":        fmt.Sprintf("%s,%s,%s,\"system:masters\"\n", adminToken, AdminUser, AdminUser),
		"audit-policy.yaml": AuditPolicy,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	saKey := filepath.Join(dir, "sa.key")
	if err := WriteECKey(saKey); err != nil {
		t.Fatal(err)
	}

	certDir := filepath.Join(dir, "certs")
	port := freePort(t)
	cp.URL = "https://127.0.0.1:" + strconv.Itoa(port)
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + certDir,
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--audit-policy-file=" + filepath.Join(dir, "audit-policy.yaml"),
		"--audit-log-path=" + cp.AuditLog,
		"--audit-log-mode=blocking",
		// No kubelets: nothing to reconcile the kubernetes Service's
		// endpoints to (and 127.0.0.1 is no valid endpoint).
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}
	logPath := filepath.Join(dir, "kube-apiserver.log")
	stop := startProcess(t, "kube-apiserver", apiserverBin, args, logPath)

	cp.CAFile = filepath.Join(certDir, "apiserver.crt")
	cp.Config = &rest.Config{
		Host:            cp.URL,
		BearerToken:     adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAFile: cp.CAFile},
		Timeout:         30 * time.Second,
		QPS:             100,
		Burst:           200,
	}
	waitReady(t, cp, stop, logPath)
	var err error
	if cp.Client, err = kubernetes.NewForConfig(cp.Config); err != nil {
		t.Fatal(err)
	}
	return cp
}

// startEtcd runs a one-member etcd on loopback with its data in dir and
// returns its client URL once it is healthy.
func startEtcd(t testing.TB, bin, dir string) string {
	t.Helper()
	client, peer := freePort(t), freePort(t)
	clientURL := "http://127.0.0.1:" + strconv.Itoa(client)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
	args := []string{
		"--name=weft-test",
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=weft-test=" + peerURL,
		"--initial-cluster-state=new",
		"--logger=zap",
		"--log-level=warn",
	}
	logPath := filepath.Join(dir, "etcd.log")
	exited := startProcess(t, "etcd", bin, args, logPath)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(clientURL + "/health")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"health":"true"`)) {
				return clientURL
			}
		}
		select {
		case <-exited:
			t.Fatalf("etcd exited before it was healthy; its log:\n%s", Tail(logPath))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd not healthy at %s after 30 s; its log:\n%s", clientURL, Tail(logPath))
		}
	}
}

// startProcess starts bin with its output in logPath and stops it when t
// ends: SIGTERM, then SIGKILL after 15 s. The channel closes when it exits.
func startProcess(t testing.TB, name, bin string, args []string, logPath string) <-chan struct{} {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Not in the test's process group: a ^C reaches the test, whose
	// cleanup then stops this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			t.Logf("%s did not stop on SIGTERM within 15 s; killing it", name)
			cmd.Process.Kill()
			<-exited
		}
	})
	return exited
}

// waitReady polls /readyz until the apiserver answers ok (at most 90 s:
// about 3 s on an idle 2-core machine, far more under a loaded one).
func waitReady(t testing.TB, cp *ControlPlane, exited <-chan struct{}, logPath string) {
	t.Helper()
	rc := rest.CopyConfig(cp.Config)
	rc.Timeout = 5 * time.Second
	var client *http.Client
	deadline := time.Now().Add(90 * time.Second)
	last := "no serving certificate in --cert-dir yet"
	for {
		if client == nil {
			// The apiserver writes its self-signed certificate as it starts.
			if _, err := os.Stat(cp.CAFile); err == nil {
				if client, err = rest.HTTPClientFor(rc); err != nil {
					t.Fatal(err)
				}
			}
		}
		if client != nil {
			ok, answer := readyz(client, cp.URL)
			if ok {
				return
			}
			last = answer
		}
		select {
		case <-exited:
			t.Fatalf("kube-apiserver exited before it was ready; its log:\n%s", Tail(logPath))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready at %s after 90 s (last answer: %s); its log:\n%s", cp.URL, last, Tail(logPath))
		}
	}
}

// readyz asks the apiserver's /readyz once.
func readyz(client *http.Client, url string) (ok bool, answer string) {
	resp, err := client.Get(url + "/readyz")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("%s: %s", resp.Status, body)
}

// ServiceAccountToken returns a token of the service account namespace/name
// (which must exist), from the TokenRequest API: what a pod of that
// service account gets.
func (cp *ControlPlane) ServiceAccountToken(t testing.TB, namespace, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := cp.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for service account %s/%s: %v", namespace, name, err)
	}
	return tr.Status.Token
}

// ConfigFor is a client configuration that authenticates with token.
func (cp *ControlPlane) ConfigFor(token string) *rest.Config {
	return &rest.Config{
		Host:            cp.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: cp.CAFile},
		Timeout:         30 * time.Second,
	}
}

// ClientFor is a client that authenticates with token.
func (cp *ControlPlane) ClientFor(t testing.TB, token string) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(cp.ConfigFor(token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// APIClientFor is weft's own client (internal/kubeapi, what the weft
// binary uses) authenticating with token.
func (cp *ControlPlane) APIClientFor(t testing.TB, token string) *kubeapi.Client {
	t.Helper()
	c, err := kubeapi.New(kubeapi.Config{Server: cp.URL, CAFile: cp.CAFile, Token: token, Timeout: 30 * time.Second, UserAgent: "weft-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// WriteKubeconfig writes a kubeconfig that reaches the apiserver with token
// and returns its path.
func (cp *ControlPlane) WriteKubeconfig(t testing.TB, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster:
      server: %s
      certificate-authority: %s
users:
  - name: test
    user:
      token: %s
contexts:
  - name: test
    context: {cluster: test, user: test}
current-context: test
`, cp.URL, cp.CAFile, token)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// AuditPolicy logs the service accounts' requests, one event each when
// the response is complete, and nothing about anyone else (the control
// plane's own components, the tests' admin).
const AuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
`

// WriteECKey writes a new P-256 private key (PEM, 0600): the service
// account token signing key.
func WriteECKey(path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// freePort is a TCP port on 127.0.0.1 that nothing listened on a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// RandomHex is n random bytes in hex: tokens and unique names.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Tail is the end of a log file, for failure messages.
func Tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// DefaultServiceAccount creates the service account "default" in
// namespace, as the controller-manager (not running here) would for every
// namespace: pods that name no service account need it to be admitted.
func (cp *ControlPlane) DefaultServiceAccount(t testing.TB, namespace string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: namespace}}
	if _, err := cp.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("service account %s/default: %v", namespace, err)
	}
}

// CreateNamespace creates a namespace with labels and its default service
// account.
func (cp *ControlPlane) CreateNamespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("namespace %s: %v", name, err)
	}
	cp.DefaultServiceAccount(t, name)
}
