package inject

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	"github.com/weftnet/weft/internal/atomicfile"
	"github.com/weftnet/weft/internal/kubeapi"
)

// The files of a certificate directory, named as in a kubernetes.io/tls
// Secret so that a mounted Secret (cert-manager's, say) works as it is.
const (
	CAFile   = "ca.crt"
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// CertValidity is how long GenerateCerts' certificates are valid;
// Bootstrap renews them when less than CertRenewBefore is left.
const (
	CertValidity    = 365 * 24 * time.Hour
	CertRenewBefore = 30 * 24 * time.Hour
)

// Certs is a CA and a serving certificate it signed, PEM-encoded.
type Certs struct {
	CA   []byte // the CA certificate: the webhook's caBundle
	Cert []byte // the serving certificate
	Key  []byte // the serving certificate's private key
}

// ServiceDNSName is the name the apiserver dials for a webhook served by
// service in namespace (clientConfig.service).
func ServiceDNSName(service, namespace string) string {
	return service + "." + namespace + ".svc"
}

// GenerateCerts makes a self-signed ECDSA P-256 CA and a serving
// certificate it signs for service.namespace.svc (and the shorter names),
// valid from now for CertValidity. The certificate also names extraHosts,
// IP addresses or DNS names, for a webhook the apiserver reaches by URL
// (clientConfig.url) rather than through the Service.
func GenerateCerts(service, namespace string, now time.Time, extraHosts ...string) (*Certs, error) {
	if service == "" || namespace == "" {
		return nil, fmt.Errorf("generate webhook certificate: need a service and a namespace, got %q and %q", service, namespace)
	}
	dnsName := ServiceDNSName(service, namespace)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	// Backdated a little: the apiserver's clock may be behind ours.
	notBefore := now.Add(-5 * time.Minute)
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "weft injector CA for " + dnsName},
		NotBefore:             notBefore,
		NotAfter:              now.Add(CertValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: dnsName},
		DNSNames:     []string{dnsName, service + "." + namespace, service},
		NotBefore:    notBefore,
		NotAfter:     now.Add(CertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range extraHosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode serving key: %w", err)
	}
	return &Certs{
		CA:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // crypto/rand does not fail (Go 1.24+)
	return n
}

// Verify checks that the serving certificate chains to the CA for dnsName
// at time at, and that the key belongs to it.
func (c *Certs) Verify(dnsName string, at time.Time) error {
	if _, err := tls.X509KeyPair(c.Cert, c.Key); err != nil {
		return fmt.Errorf("serving certificate and key: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.CA) {
		return errors.New("CA: no PEM certificate")
	}
	block, _ := pem.Decode(c.Cert)
	if block == nil {
		return errors.New("serving certificate: no PEM block")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: dnsName, Roots: pool, CurrentTime: at})
	return err
}

// WriteCerts writes c into dir as ca.crt, tls.crt (0644) and tls.key
// (0600), each atomically (internal/atomicfile), the key first and the
// certificate last, so a reader that sees the new certificate sees its key
// too.
func WriteCerts(dir string, c *Certs) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certificate dir: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{KeyFile, c.Key, 0o600}, {CAFile, c.CA, 0o644}, {CertFile, c.Cert, 0o644}} {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// ReadCerts reads what WriteCerts wrote.
func ReadCerts(dir string) (*Certs, error) {
	var c Certs
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{CAFile, &c.CA}, {CertFile, &c.Cert}, {KeyFile, &c.Key}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return nil, err
		}
		*f.dst = b
	}
	return &c, nil
}

// WebhookConfigClient is the part of the Kubernetes API PatchCABundle
// uses; *kubeapi.Client is one.
type WebhookConfigClient interface {
	GetMutatingWebhookConfiguration(ctx context.Context, name string) (*admissionregistrationv1.MutatingWebhookConfiguration, error)
	UpdateMutatingWebhookConfiguration(ctx context.Context, mwc *admissionregistrationv1.MutatingWebhookConfiguration) (*admissionregistrationv1.MutatingWebhookConfiguration, error)
}

// caBundleAttempts bounds PatchCABundle's tries when other writers keep
// winning the race (client-go's retry.DefaultRetry: 5, 10 ms apart).
const (
	caBundleAttempts = 5
	caBundleBackoff  = 10 * time.Millisecond
)

// PatchCABundle sets caBundle of every webhook of the
// MutatingWebhookConfiguration name to ca, retrying on conflicts; it writes
// nothing when they all hold ca already. It reads and updates the whole
// object (RBAC verbs get and update, what deploy/ grants the injector) with
// its resourceVersion, so a concurrent change by someone else is a conflict
// to retry, never lost.
func PatchCABundle(ctx context.Context, client WebhookConfigClient, name string, ca []byte) error {
	var err error
	for attempt := 1; ; attempt++ {
		if err = setCABundle(ctx, client, name, ca); !errors.Is(err, kubeapi.ErrConflict) || attempt == caBundleAttempts {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("set caBundle of MutatingWebhookConfiguration %s: %w (after: %w)", name, ctx.Err(), err)
		case <-time.After(caBundleBackoff):
		}
	}
	if err != nil {
		return fmt.Errorf("set caBundle of MutatingWebhookConfiguration %s: %w", name, err)
	}
	return nil
}

func setCABundle(ctx context.Context, client WebhookConfigClient, name string, ca []byte) error {
	mwc, err := client.GetMutatingWebhookConfiguration(ctx, name)
	if err != nil {
		return err
	}
	if len(mwc.Webhooks) == 0 {
		return errors.New("it has no webhooks")
	}
	changed := false
	for i := range mwc.Webhooks {
		if !bytes.Equal(mwc.Webhooks[i].ClientConfig.CABundle, ca) {
			mwc.Webhooks[i].ClientConfig.CABundle = ca
			changed = true
		}
	}
	if !changed {
		return nil
	}
	_, err = client.UpdateMutatingWebhookConfiguration(ctx, mwc)
	return err
}

// BootstrapConfig says where Bootstrap keeps the self-signed certificates
// and which webhook configuration trusts them.
type BootstrapConfig struct {
	Dir                string // certificate directory (CAFile, CertFile, KeyFile)
	Service, Namespace string // the Service in front of the injector
	// WebhookConfig names the MutatingWebhookConfiguration whose caBundle
	// is set; empty leaves it alone.
	WebhookConfig string
	Client        WebhookConfigClient // needed when WebhookConfig is set
	// ExtraHosts are more names (IPs or DNS names) for the serving
	// certificate: GenerateCerts' extraHosts.
	ExtraHosts []string
}

// Bootstrap makes sure Dir holds a self-signed CA and a serving certificate
// for the Service, valid for at least CertRenewBefore from now, generating
// them if not, and sets the webhook configuration's caBundle to that CA.
// A restarted injector reuses its certificates, so the caBundle rarely
// changes. Each replica bootstraps its own CA: run one replica, or use
// certificates from a Secret (cert-manager) for more.
func Bootstrap(ctx context.Context, cfg BootstrapConfig, now time.Time, log *slog.Logger) (*Certs, error) {
	dnsName := ServiceDNSName(cfg.Service, cfg.Namespace)
	certs, err := ReadCerts(cfg.Dir)
	for _, name := range append([]string{dnsName}, cfg.ExtraHosts...) {
		if err == nil {
			err = certs.Verify(name, now.Add(CertRenewBefore))
		}
	}
	if err != nil {
		log.Info("generating self-signed webhook certificate", "dns", dnsName, "dir", cfg.Dir, "reason", err)
		if certs, err = GenerateCerts(cfg.Service, cfg.Namespace, now, cfg.ExtraHosts...); err != nil {
			return nil, err
		}
		if err := WriteCerts(cfg.Dir, certs); err != nil {
			return nil, err
		}
	}
	if cfg.WebhookConfig != "" {
		if cfg.Client == nil {
			return nil, fmt.Errorf("set caBundle of MutatingWebhookConfiguration %s: no Kubernetes client", cfg.WebhookConfig)
		}
		if err := PatchCABundle(ctx, cfg.Client, cfg.WebhookConfig, certs.CA); err != nil {
			return nil, err
		}
		log.Info("webhook caBundle set", "config", cfg.WebhookConfig)
	}
	return certs, nil
}

// ServerConfig is what ServeTLS serves.
type ServerConfig struct {
	// CertDir holds CertFile and KeyFile. They are re-read when they
	// change, so a renewed Secret takes effect without a restart.
	CertDir string
	Handler http.Handler
}

// ServeTLS serves cfg.Handler over TLS on ln until ctx is cancelled, then
// shuts down gracefully (at most 10 s) and returns nil; other errors are
// returned as they happen. ln is closed on return.
func ServeTLS(ctx context.Context, ln net.Listener, cfg ServerConfig, log *slog.Logger) error {
	kp := &keyPair{cert: filepath.Join(cfg.CertDir, CertFile), key: filepath.Join(cfg.CertDir, KeyFile)}
	if _, err := kp.get(nil); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           cfg.Handler,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	log.Info("injector webhook serving", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve webhook on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc // http.ErrServerClosed
	return err
}

// keyPair loads a certificate and key from files, again whenever the
// certificate file's modification time changes.
type keyPair struct {
	cert, key string

	mu      sync.Mutex
	modTime time.Time
	loaded  *tls.Certificate
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	fi, err := os.Stat(k.cert)
	if err != nil {
		return nil, fmt.Errorf("webhook certificate: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.loaded != nil && fi.ModTime().Equal(k.modTime) {
		return k.loaded, nil
	}
	c, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		if k.loaded != nil {
			return k.loaded, nil // caught mid-update: keep the old pair
		}
		return nil, fmt.Errorf("webhook certificate: %w", err)
	}
	k.loaded, k.modTime = &c, fi.ModTime()
	return k.loaded, nil
}
