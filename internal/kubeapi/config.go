package kubeapi

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// ServiceAccountDir is where Kubernetes mounts a pod's service account:
// its token, rotated by the kubelet, and the cluster's CA certificate.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// ErrNotInCluster is InCluster's error outside a pod.
var ErrNotInCluster = errors.New("not in a Kubernetes pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")

// Config says where the apiserver is and who the client is to it. Files
// named here are read by New, and TokenFile again for every request.
type Config struct {
	// Server is the apiserver's URL: https://host[:port], perhaps with a
	// path prefix (an authenticating proxy's).
	Server string
	// CAData or CAFile holds the PEM certificates that verify the
	// apiserver; with neither, the system's roots do.
	CAData []byte
	CAFile string
	// TLSServerName, when set, is the name checked in the apiserver's
	// certificate instead of Server's host.
	TLSServerName string
	// Insecure skips the verification of the apiserver's certificate
	// (insecure-skip-tls-verify): for tests only.
	Insecure bool
	// Token is a bearer token. TokenFile holds one instead, read again for
	// every request: a projected service account token is rotated by the
	// kubelet (hourly) and the old one expires.
	Token     string
	TokenFile string
	// CertData and KeyData, or CertFile and KeyFile, are a PEM client
	// certificate and its key.
	CertData, KeyData []byte
	CertFile, KeyFile string
	// UserAgent names the caller in the apiserver's audit log and metrics.
	UserAgent string
	// Timeout bounds every request, connection included; zero: no bound
	// but the context's.
	Timeout time.Duration
}

// InCluster is the configuration of a process in a pod: the apiserver of
// $KUBERNETES_SERVICE_HOST and $KUBERNETES_SERVICE_PORT, verified with the
// service account's ca.crt, authenticated with its token (re-read for
// every request). Outside a pod the error is ErrNotInCluster.
func InCluster() (Config, error) {
	return inCluster(os.Getenv, ServiceAccountDir)
}

func inCluster(getenv func(string) string, dir string) (Config, error) {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return Config{}, ErrNotInCluster
	}
	hostPort := net.JoinHostPort(host, port)
	u, err := url.Parse("https://" + hostPort)
	if err == nil && (u.Host != hostPort || u.Path != "") {
		err = errors.New("not a host and a port")
	}
	if err != nil {
		return Config{}, fmt.Errorf("in-cluster apiserver from KUBERNETES_SERVICE_HOST %q and KUBERNETES_SERVICE_PORT %q: %w", host, port, err)
	}
	return Config{
		Server:    u.String(),
		CAFile:    filepath.Join(dir, "ca.crt"),
		TokenFile: filepath.Join(dir, "token"),
	}, nil
}
