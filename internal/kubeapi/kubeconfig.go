package kubeapi

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// kubeconfig is the part of a kubeconfig file (clientcmd's v1 Config) that
// ParseKubeconfig reads. Data fields are strings, not []byte, so that bad
// base64 is reported with the field's name.
type kubeconfig struct {
	CurrentContext string `json:"current-context"`
	Clusters       []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server                   string `json:"server"`
			CertificateAuthority     string `json:"certificate-authority"`
			CertificateAuthorityData string `json:"certificate-authority-data"`
			TLSServerName            string `json:"tls-server-name"`
			InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify"`
			ProxyURL                 string `json:"proxy-url"`
		} `json:"cluster"`
	} `json:"clusters"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			Token                 string `json:"token"`
			TokenFile             string `json:"tokenFile"`
			ClientCertificate     string `json:"client-certificate"`
			ClientCertificateData string `json:"client-certificate-data"`
			ClientKey             string `json:"client-key"`
			ClientKeyData         string `json:"client-key-data"`
			Username              string `json:"username"`
			Password              string `json:"password"`
			Exec                  *struct {
				Command string `json:"command"`
			} `json:"exec"`
			AuthProvider *struct {
				Name string `json:"name"`
			} `json:"auth-provider"`
		} `json:"user"`
	} `json:"users"`
}

// LoadKubeconfig reads the kubeconfig file at path: ParseKubeconfig, with
// relative file names taken from path's directory, as kubectl does.
func LoadKubeconfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("kubeconfig: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return Config{}, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	cfg, err := ParseKubeconfig(data, dir)
	if err != nil {
		return Config{}, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// ParseKubeconfig returns the Config of data's current context: its
// cluster and user. Relative file names in it are joined to dir; the
// files are not read (New reads them). Settings this package cannot honour
// (exec and auth-provider plugins, basic auth, proxy-url) are errors, as
// are contradictions kubectl also refuses (a CA file and CA data, a CA with
// insecure-skip-tls-verify).
func ParseKubeconfig(data []byte, dir string) (Config, error) {
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return Config{}, fmt.Errorf("not a kubeconfig: %w", err)
	}
	if kc.CurrentContext == "" {
		return Config{}, fmt.Errorf("no current-context (set one with kubectl config use-context)")
	}
	ci := -1
	var names []string
	for i, c := range kc.Contexts {
		names = append(names, c.Name)
		if c.Name == kc.CurrentContext && ci < 0 {
			ci = i
		}
	}
	if ci < 0 {
		return Config{}, fmt.Errorf("current-context %q: no such context (have %q)", kc.CurrentContext, names)
	}
	ctx := kc.Contexts[ci].Context
	var cfg Config
	if err := kc.cluster(ctx.Cluster, dir, &cfg); err != nil {
		return Config{}, fmt.Errorf("context %q: %w", kc.CurrentContext, err)
	}
	if err := kc.user(ctx.User, dir, &cfg); err != nil {
		return Config{}, fmt.Errorf("context %q: %w", kc.CurrentContext, err)
	}
	return cfg, nil
}

// indexNamed is the index of the first of a kubeconfig list's n entries
// called name (nameAt(i) is entry i's name), or -1.
func indexNamed(n int, nameAt func(int) string, name string) int {
	for i := range n {
		if nameAt(i) == name {
			return i
		}
	}
	return -1
}

// cluster fills cfg's apiserver fields from the cluster called name.
func (kc *kubeconfig) cluster(name, dir string, cfg *Config) error {
	if name == "" {
		return fmt.Errorf("names no cluster")
	}
	i := indexNamed(len(kc.Clusters), func(j int) string { return kc.Clusters[j].Name }, name)
	if i < 0 {
		return fmt.Errorf("cluster %q: not found", name)
	}
	c := kc.Clusters[i].Cluster
	if err := checkServer(c.Server); err != nil {
		return fmt.Errorf("cluster %q: %w", name, err)
	}
	cfg.Server = c.Server
	if c.CertificateAuthority != "" && c.CertificateAuthorityData != "" {
		return fmt.Errorf("cluster %q: both certificate-authority and certificate-authority-data: give one", name)
	}
	if c.InsecureSkipTLSVerify && (c.CertificateAuthority != "" || c.CertificateAuthorityData != "") {
		return fmt.Errorf("cluster %q: insecure-skip-tls-verify with a certificate authority: give one", name)
	}
	if c.ProxyURL != "" {
		return fmt.Errorf("cluster %q: proxy-url is not supported (HTTPS_PROXY is)", name)
	}
	var err error
	if cfg.CAData, err = decodeData("certificate-authority-data", c.CertificateAuthorityData); err != nil {
		return fmt.Errorf("cluster %q: %w", name, err)
	}
	cfg.CAFile = resolve(dir, c.CertificateAuthority)
	cfg.TLSServerName = c.TLSServerName
	cfg.Insecure = c.InsecureSkipTLSVerify
	return nil
}

// user fills cfg's credentials from the user called name; a context
// without a user makes anonymous requests.
func (kc *kubeconfig) user(name, dir string, cfg *Config) error {
	if name == "" {
		return nil
	}
	i := indexNamed(len(kc.Users), func(j int) string { return kc.Users[j].Name }, name)
	if i < 0 {
		return fmt.Errorf("user %q: not found", name)
	}
	u := kc.Users[i].User
	switch {
	case u.Exec != nil:
		return fmt.Errorf("user %q: exec credential plugins (%q) are not supported: give a token or a client certificate", name, u.Exec.Command)
	case u.AuthProvider != nil:
		return fmt.Errorf("user %q: auth-provider %q is not supported: give a token or a client certificate", name, u.AuthProvider.Name)
	case u.Username != "" || u.Password != "":
		return fmt.Errorf("user %q: basic auth (username, password) is not supported: give a token or a client certificate", name)
	case u.ClientCertificate != "" && u.ClientCertificateData != "":
		return fmt.Errorf("user %q: both client-certificate and client-certificate-data: give one", name)
	case u.ClientKey != "" && u.ClientKeyData != "":
		return fmt.Errorf("user %q: both client-key and client-key-data: give one", name)
	case (u.ClientCertificate != "" || u.ClientCertificateData != "") != (u.ClientKey != "" || u.ClientKeyData != ""):
		return fmt.Errorf("user %q: a client certificate needs its key and a key its certificate", name)
	}
	// As kubectl: a token given inline wins over tokenFile.
	if u.Token != "" {
		cfg.Token = u.Token
	} else {
		cfg.TokenFile = resolve(dir, u.TokenFile)
	}
	var err error
	if cfg.CertData, err = decodeData("client-certificate-data", u.ClientCertificateData); err != nil {
		return fmt.Errorf("user %q: %w", name, err)
	}
	if cfg.KeyData, err = decodeData("client-key-data", u.ClientKeyData); err != nil {
		return fmt.Errorf("user %q: %w", name, err)
	}
	cfg.CertFile = resolve(dir, u.ClientCertificate)
	cfg.KeyFile = resolve(dir, u.ClientKey)
	return nil
}

// checkServer accepts an http or https URL with a host, and perhaps a path
// prefix, and nothing else (no query, no user).
func checkServer(server string) error {
	if server == "" {
		return fmt.Errorf("no server")
	}
	const want = "want https://host[:port][/path]"
	u, err := url.Parse(server)
	if err != nil {
		return fmt.Errorf("server %q: %s: %w", server, want, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("server %q: %s", server, want)
	}
	return nil
}

func decodeData(field, s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%s: not base64: %w", field, err)
	}
	return b, nil
}

// resolve makes a kubeconfig's relative file name relative to the file's
// directory.
func resolve(dir, name string) string {
	if name == "" || filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(dir, name)
}
