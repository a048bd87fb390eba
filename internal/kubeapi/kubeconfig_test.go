package kubeapi

import (
	"encoding/base64"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// kubeconfigOf is a kubeconfig of one context "c" joining cluster and user
// (YAML mappings, indented by four spaces).
func kubeconfigOf(cluster, user string) string {
	return "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n" + cluster +
		"users:\n- name: admin\n  user:\n" + user +
		"contexts:\n- name: c\n  context: {cluster: prod, user: admin}\ncurrent-context: c\n"
}

const server = "    server: https://10.0.0.1:6443\n"

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseKubeconfig(t *testing.T) {
	const dir = "/etc/weft"
	for _, c := range []struct {
		name string
		in   string
		want Config
	}{
		{"token", kubeconfigOf(server, "    token: abc\n"),
			Config{Server: "https://10.0.0.1:6443", Token: "abc"}},
		{"CA file relative to the kubeconfig, token file", kubeconfigOf(server+"    certificate-authority: pki/ca.crt\n", "    tokenFile: /run/token\n"),
			Config{Server: "https://10.0.0.1:6443", CAFile: "/etc/weft/pki/ca.crt", TokenFile: "/run/token"}},
		{"CA data, server name", kubeconfigOf(server+"    certificate-authority-data: "+b64("PEM CA")+"\n    tls-server-name: kubernetes\n", "    token: abc\n"),
			Config{Server: "https://10.0.0.1:6443", CAData: []byte("PEM CA"), TLSServerName: "kubernetes", Token: "abc"}},
		{"token wins over tokenFile", kubeconfigOf(server, "    token: abc\n    tokenFile: t\n"),
			Config{Server: "https://10.0.0.1:6443", Token: "abc"}},
		{"client certificate data", kubeconfigOf(server, "    client-certificate-data: "+b64("CERT")+"\n    client-key-data: "+b64("KEY")+"\n"),
			Config{Server: "https://10.0.0.1:6443", CertData: []byte("CERT"), KeyData: []byte("KEY")}},
		{"client certificate files", kubeconfigOf(server, "    client-certificate: me.crt\n    client-key: /abs/me.key\n"),
			Config{Server: "https://10.0.0.1:6443", CertFile: "/etc/weft/me.crt", KeyFile: "/abs/me.key"}},
		{"insecure, path prefix", kubeconfigOf("    server: https://rancher.example/k8s/clusters/c-1\n    insecure-skip-tls-verify: true\n", "    token: abc\n"),
			Config{Server: "https://rancher.example/k8s/clusters/c-1", Insecure: true, Token: "abc"}},
		{"no user: anonymous", "clusters:\n- name: p\n  cluster: {server: 'http://127.0.0.1:8080'}\ncontexts:\n- name: c\n  context: {cluster: p}\ncurrent-context: c\n",
			Config{Server: "http://127.0.0.1:8080"}},
		{"the current one of several contexts", strings.Replace(kubeconfigOf(server, "    token: abc\n"), "current-context:",
			"- name: other\n  context: {cluster: nowhere, user: nobody}\ncurrent-context:", 1),
			Config{Server: "https://10.0.0.1:6443", Token: "abc"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseKubeconfig([]byte(c.in), dir)
			if err != nil {
				t.Fatalf("%v\n%s", err, c.in)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseKubeconfigErrors(t *testing.T) {
	for _, c := range []struct {
		name, in, want string
	}{
		{"not YAML", "clusters: [", "not a kubeconfig"},
		{"a list", "- a\n- b\n", "not a kubeconfig"},
		{"empty", "", "no current-context"},
		{"no such context", strings.Replace(kubeconfigOf(server, "    token: a\n"), "current-context: c", "current-context: d", 1), `current-context "d": no such context (have ["c"])`},
		{"no such cluster", strings.Replace(kubeconfigOf(server, "    token: a\n"), "cluster: prod,", "cluster: dev,", 1), `context "c": cluster "dev": not found`},
		{"context without cluster", "contexts:\n- name: c\n  context: {user: u}\ncurrent-context: c\n", `context "c": names no cluster`},
		{"no server", kubeconfigOf("    insecure-skip-tls-verify: true\n", "    token: a\n"), `cluster "prod": no server`},
		{"server without scheme", kubeconfigOf("    server: 10.0.0.1:6443\n", "    token: a\n"), `want https://host`},
		{"server with a query", kubeconfigOf("    server: https://h/?x=1\n", "    token: a\n"), `want https://host`},
		{"bad server", kubeconfigOf("    server: \"https://h:port\"\n", "    token: a\n"), `cluster "prod": server "https://h:port": want https://host`},
		{"two CAs", kubeconfigOf(server+"    certificate-authority: ca.crt\n    certificate-authority-data: "+b64("x")+"\n", "    token: a\n"), "both certificate-authority and certificate-authority-data"},
		{"CA and insecure", kubeconfigOf(server+"    certificate-authority: ca.crt\n    insecure-skip-tls-verify: true\n", "    token: a\n"), "insecure-skip-tls-verify with a certificate authority"},
		{"CA data not base64", kubeconfigOf(server+"    certificate-authority-data: '-----BEGIN CERTIFICATE-----'\n", "    token: a\n"), "certificate-authority-data: not base64"},
		{"proxy", kubeconfigOf(server+"    proxy-url: http://proxy:3128\n", "    token: a\n"), "proxy-url is not supported"},
		{"no such user", strings.Replace(kubeconfigOf(server, "    token: a\n"), "user: admin}", "user: root}", 1), `user "root": not found`},
		{"exec plugin", kubeconfigOf(server, "    exec:\n      command: aws\n      apiVersion: client.authentication.k8s.io/v1\n"), `exec credential plugins ("aws") are not supported`},
		{"auth provider", kubeconfigOf(server, "    auth-provider:\n      name: gcp\n"), `auth-provider "gcp" is not supported`},
		{"basic auth", kubeconfigOf(server, "    username: admin\n    password: secret\n"), "basic auth"},
		{"certificate without key", kubeconfigOf(server, "    client-certificate: me.crt\n"), "a client certificate needs its key"},
		{"key without certificate", kubeconfigOf(server, "    client-key-data: "+b64("k")+"\n"), "a client certificate needs its key"},
		{"two certificates", kubeconfigOf(server, "    client-certificate: me.crt\n    client-certificate-data: "+b64("c")+"\n    client-key: k\n"), "both client-certificate and client-certificate-data"},
		{"two keys", kubeconfigOf(server, "    client-certificate: me.crt\n    client-key: k\n    client-key-data: "+b64("k")+"\n"), "both client-key and client-key-data"},
		{"key data not base64", kubeconfigOf(server, "    client-certificate: me.crt\n    client-key-data: '%%'\n"), "client-key-data: not base64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := ParseKubeconfig([]byte(c.in), "/etc/weft")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %+v, %v; want an error with %q", cfg, err, c.want)
			}
		})
	}
}

func TestLoadKubeconfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config")
	writeFile(t, path, kubeconfigOf(server+"    certificate-authority: ca.crt\n", "    token: abc\n"))
	cfg, err := LoadKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "ca.crt"); cfg.CAFile != want {
		t.Errorf("CA file %q, want %q: relative to the kubeconfig", cfg.CAFile, want)
	}
	if _, err := LoadKubeconfig(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "kubeconfig") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	writeFile(t, path, "current-context: x\n")
	if _, err := LoadKubeconfig(path); err == nil || !strings.Contains(err.Error(), "kubeconfig "+path+": ") {
		t.Errorf("bad file: %v, want the path in the error", err)
	}
}

func TestInCluster(t *testing.T) {
	const dir = "/var/run/secrets/kubernetes.io/serviceaccount"
	for _, c := range []struct {
		name       string
		host, port string
		want       string // the server, or the error
	}{
		{"IPv4", "10.96.0.1", "443", "https://10.96.0.1:443"},
		{"IPv6", "fd00:10:96::1", "443", "https://[fd00:10:96::1]:443"},
		{"no host", "", "443", ErrNotInCluster.Error()},
		{"no port", "10.96.0.1", "", ErrNotInCluster.Error()},
		{"bad port", "10.96.0.1", "https", `KUBERNETES_SERVICE_PORT "https"`},
		{"bad host", "10.96.0.1/8", "443", `KUBERNETES_SERVICE_HOST "10.96.0.1/8"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"KUBERNETES_SERVICE_HOST": c.host, "KUBERNETES_SERVICE_PORT": c.port}
			got, err := inCluster(func(k string) string { return env[k] }, dir)
			if !strings.HasPrefix(c.want, "https://") {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("got %+v, %v; want an error with %q", got, err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Config{Server: c.want, CAFile: dir + "/ca.crt", TokenFile: dir + "/token"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if _, err := inCluster(func(string) string { return "" }, dir); !errors.Is(err, ErrNotInCluster) {
		t.Errorf("outside a pod: %v, want ErrNotInCluster", err)
	}
}

// FuzzParseKubeconfig: no input makes the parser panic, and what it
// accepts is consistent: a server New accepts, at most one of each pair of
// alternatives, no CA when insecure, files under the given directory.
func FuzzParseKubeconfig(f *testing.F) {
	f.Add(kubeconfigOf(server+"    certificate-authority: ca.crt\n", "    tokenFile: t\n"))
	f.Add(kubeconfigOf(server+"    certificate-authority-data: "+b64("x")+"\n", "    client-certificate-data: "+b64("c")+"\n    client-key: k\n"))
	f.Add(kubeconfigOf("    server: http://[::1]:8080/p\n    insecure-skip-tls-verify: true\n", "    exec: {command: x}\n"))
	f.Add("current-context: c\ncontexts: [{name: c, context: {cluster: a, user: b}}]\nclusters: [{name: a, cluster: {server: 'https://a'}}]\nusers: [{name: b, user: {token: t}}]\n")
	f.Add("a: &a [*a, *a]\n")
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := ParseKubeconfig([]byte(in), "/etc/weft")
		if err != nil {
			if cfg.Server != "" || cfg.Token != "" {
				t.Errorf("error %v with a config %+v", err, cfg)
			}
			return
		}
		if err := checkServer(cfg.Server); err != nil {
			t.Errorf("accepted server %q: %v", cfg.Server, err)
		}
		if cfg.Token != "" && cfg.TokenFile != "" || len(cfg.CAData) > 0 && cfg.CAFile != "" ||
			len(cfg.CertData) > 0 && cfg.CertFile != "" || len(cfg.KeyData) > 0 && cfg.KeyFile != "" {
			t.Errorf("two alternatives at once: %+v", cfg)
		}
		if cfg.Insecure && (len(cfg.CAData) > 0 || cfg.CAFile != "") {
			t.Errorf("insecure with a CA: %+v", cfg)
		}
		for _, f := range []string{cfg.CAFile, cfg.TokenFile, cfg.CertFile, cfg.KeyFile} {
			if f != "" && !filepath.IsAbs(f) {
				t.Errorf("relative file %q", f)
			}
		}
	})
}
