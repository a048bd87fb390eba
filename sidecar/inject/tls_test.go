package inject

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/internal/kubeapi"
)

var testNow = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func parseCert(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("no PEM certificate: %q", pemBytes)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGenerateCerts: the serving certificate verifies against the CA for
// the Service's DNS name (checked with crypto/x509 directly), is ECDSA
// P-256, for server auth, and for no other name.
func TestGenerateCerts(t *testing.T) {
	c, err := GenerateCerts("weft-injector", "weft-system", testNow)
	if err != nil {
		t.Fatal(err)
	}
	ca, leaf := parseCert(t, c.CA), parseCert(t, c.Cert)
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA certificate cannot sign certificates")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "weft-injector.weft-system.svc", Roots: pool, CurrentTime: testNow}); err != nil {
		t.Errorf("serving certificate does not verify for weft-injector.weft-system.svc: %v", err)
	}
	for _, bad := range []struct {
		name string
		at   time.Time
	}{
		{"weft-injector.other.svc", testNow},
		{"evil.example", testNow},
		{"weft-injector.weft-system.svc", testNow.Add(CertValidity + time.Hour)},
	} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: bad.name, Roots: pool, CurrentTime: bad.at}); err == nil {
			t.Errorf("serving certificate verifies for %s at %v", bad.name, bad.at)
		}
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("serving key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("ext key usage %v, want server auth", leaf.ExtKeyUsage)
	}
	if _, err := tls.X509KeyPair(c.Cert, c.Key); err != nil {
		t.Errorf("key does not match certificate: %v", err)
	}
	if err := c.Verify("weft-injector.weft-system.svc", testNow); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if err := c.Verify("weft-injector.other.svc", testNow); err == nil {
		t.Error("Verify accepts another namespace's name")
	}
	other, _ := GenerateCerts("weft-injector", "weft-system", testNow)
	mixed := &Certs{CA: other.CA, Cert: c.Cert, Key: c.Key}
	if err := mixed.Verify("weft-injector.weft-system.svc", testNow); err == nil {
		t.Error("Verify accepts a certificate of another CA")
	}
}

func fakeWebhookConfig(name string, n int) *admissionregistrationv1.MutatingWebhookConfiguration {
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for i := range n {
		path := "/inject"
		mwc.Webhooks = append(mwc.Webhooks, admissionregistrationv1.MutatingWebhook{
			Name: []string{"pods.weft.dev", "pods-strict.weft.dev", "more.weft.dev"}[i],
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service:  &admissionregistrationv1.ServiceReference{Namespace: "weft-system", Name: "weft-injector", Path: &path},
				CABundle: []byte("stale"),
			},
		})
	}
	return mwc
}

// fakeWebhookConfigs is a WebhookConfigClient over stored configurations
// that keeps the apiserver's rules for updates: the resourceVersion must
// be the stored one, and each write makes a new one.
type fakeWebhookConfigs struct {
	mu      sync.Mutex
	objs    map[string]*admissionregistrationv1.MutatingWebhookConfiguration
	updates int // update calls, conflicting ones included
	// conflicts is how many of the next updates fail as if another writer
	// had come first.
	conflicts int
}

func newFakeWebhookConfigs(mwcs ...*admissionregistrationv1.MutatingWebhookConfiguration) *fakeWebhookConfigs {
	f := &fakeWebhookConfigs{objs: map[string]*admissionregistrationv1.MutatingWebhookConfiguration{}}
	for _, m := range mwcs {
		m.ResourceVersion = "1"
		f.objs[m.Name] = m
	}
	return f
}

func (f *fakeWebhookConfigs) GetMutatingWebhookConfiguration(_ context.Context, name string) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.objs[name]
	if !ok {
		return nil, &kubeapi.StatusError{Method: "GET", URL: "fake/" + name, Code: http.StatusNotFound,
			APIStatus: metav1.Status{Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound, Message: name + " not found"}}
	}
	return m.DeepCopy(), nil
}

func (f *fakeWebhookConfigs) UpdateMutatingWebhookConfiguration(_ context.Context, mwc *admissionregistrationv1.MutatingWebhookConfiguration) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates++
	old, ok := f.objs[mwc.Name]
	if !ok {
		return nil, &kubeapi.StatusError{Method: "PUT", URL: "fake/" + mwc.Name, Code: http.StatusNotFound}
	}
	if f.conflicts > 0 || mwc.ResourceVersion != old.ResourceVersion {
		if f.conflicts > 0 {
			f.conflicts--
			// Someone else's write in between.
			old.ResourceVersion = bump(old.ResourceVersion)
		}
		return nil, &kubeapi.StatusError{Method: "PUT", URL: "fake/" + mwc.Name, Code: http.StatusConflict,
			APIStatus: metav1.Status{Code: http.StatusConflict, Reason: metav1.StatusReasonConflict, Message: "the object has been modified"}}
	}
	stored := mwc.DeepCopy()
	stored.ResourceVersion = bump(old.ResourceVersion)
	f.objs[mwc.Name] = stored
	return stored.DeepCopy(), nil
}

func (f *fakeWebhookConfigs) caBundles(name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, wh := range f.objs[name].Webhooks {
		out = append(out, string(wh.ClientConfig.CABundle))
	}
	return out
}

func bump(rv string) string {
	n, _ := strconv.Atoi(rv)
	return strconv.Itoa(n + 1)
}

// TestPatchCABundle: every webhook of the configuration gets the CA; a
// second call writes nothing; a missing configuration is an error naming
// it.
func TestPatchCABundle(t *testing.T) {
	ctx := t.Context()
	cs := newFakeWebhookConfigs(fakeWebhookConfig("weft-injector", 2), fakeWebhookConfig("someone-else", 1))
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	if err := PatchCABundle(ctx, cs, "weft-injector", ca); err != nil {
		t.Fatal(err)
	}
	for i, got := range cs.caBundles("weft-injector") {
		if got != string(ca) {
			t.Errorf("webhook %d: caBundle %q", i, got)
		}
	}
	if got := cs.caBundles("someone-else"); got[0] != "stale" {
		t.Error("another configuration was changed")
	}
	if cs.updates != 1 {
		t.Errorf("%d updates, want 1", cs.updates)
	}
	if err := PatchCABundle(ctx, cs, "weft-injector", ca); err != nil {
		t.Fatal(err)
	}
	if cs.updates != 1 {
		t.Errorf("unchanged caBundle written again: %d updates", cs.updates)
	}
	err := PatchCABundle(ctx, cs, "missing", ca)
	if err == nil || !strings.Contains(err.Error(), "MutatingWebhookConfiguration missing") || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing configuration: error %v", err)
	}
}

// TestPatchCABundleConflict: an update that loses the race against another
// writer is retried on the configuration as it is now, a few times, then
// given up with an error that says so.
func TestPatchCABundleConflict(t *testing.T) {
	ca := []byte("new CA")
	for _, c := range []struct {
		name      string
		conflicts int
		wantErr   bool
	}{
		{"one conflict", 1, false},
		{"four conflicts", caBundleAttempts - 1, false},
		{"always conflicting", caBundleAttempts, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cs := newFakeWebhookConfigs(fakeWebhookConfig("weft-injector", 1))
			cs.conflicts = c.conflicts
			err := PatchCABundle(t.Context(), cs, "weft-injector", ca)
			if c.wantErr {
				if !errors.Is(err, kubeapi.ErrConflict) || !strings.Contains(err.Error(), "409") {
					t.Errorf("got %v, want the conflict", err)
				}
				if cs.updates != caBundleAttempts {
					t.Errorf("%d updates, want %d", cs.updates, caBundleAttempts)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cs.caBundles("weft-injector"); got[0] != string(ca) {
				t.Errorf("caBundle %q after the retries", got[0])
			}
			if cs.updates != c.conflicts+1 {
				t.Errorf("%d updates, want %d", cs.updates, c.conflicts+1)
			}
		})
	}
}

// TestBootstrap: the first bootstrap writes certificates for the Service
// and sets the caBundle; a restart reuses them; near expiry they are
// renewed and the caBundle follows.
func TestBootstrap(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "tls")
	cs := newFakeWebhookConfigs(fakeWebhookConfig("weft-injector", 1))
	cfg := BootstrapConfig{Dir: dir, Service: "weft-injector", Namespace: "weft-system", WebhookConfig: "weft-injector", Client: cs}
	log := slog.New(slog.DiscardHandler)

	first, err := Bootstrap(ctx, cfg, testNow, log)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := ReadCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := onDisk.Verify("weft-injector.weft-system.svc", testNow); err != nil {
		t.Fatalf("certificates on disk: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	caBundle := func() []byte { return []byte(cs.caBundles("weft-injector")[0]) }
	if !bytes.Equal(caBundle(), first.CA) {
		t.Error("caBundle is not the generated CA")
	}

	restarted, err := Bootstrap(ctx, cfg, testNow.Add(24*time.Hour), log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(restarted.CA, first.CA) || !bytes.Equal(restarted.Key, first.Key) {
		t.Error("a restart generated new certificates instead of reusing valid ones")
	}

	late := testNow.Add(CertValidity - CertRenewBefore + time.Hour)
	renewed, err := Bootstrap(ctx, cfg, late, log)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(renewed.CA, first.CA) {
		t.Error("certificates near expiry not renewed")
	}
	if !bytes.Equal(caBundle(), renewed.CA) {
		t.Error("caBundle not updated to the renewed CA")
	}

	cfg.Namespace = "elsewhere"
	moved, err := Bootstrap(ctx, cfg, late, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := moved.Verify("weft-injector.elsewhere.svc", late); err != nil {
		t.Errorf("certificates for another Service name not replaced: %v", err)
	}
}

// TestBootstrapExtraHosts: a webhook reached by URL (clientConfig.url,
// as in internal/harness/k8stest) needs its host in the certificate; certificates
// without it are replaced, ones with it reused.
func TestBootstrapExtraHosts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	log := slog.New(slog.DiscardHandler)
	cfg := BootstrapConfig{Dir: dir, Service: "weft-injector", Namespace: "weft-system"}
	plain, err := Bootstrap(t.Context(), cfg, testNow, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Verify("127.0.0.1", testNow); err == nil {
		t.Fatal("certificate without extra hosts is valid for 127.0.0.1")
	}
	cfg.ExtraHosts = []string{"127.0.0.1", "injector.example"}
	withIP, err := Bootstrap(t.Context(), cfg, testNow, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"127.0.0.1", "injector.example", "weft-injector.weft-system.svc"} {
		if err := withIP.Verify(name, testNow); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	again, err := Bootstrap(t.Context(), cfg, testNow.Add(time.Hour), log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.CA, withIP.CA) {
		t.Error("valid certificates with the extra hosts were not reused")
	}
}

// TestServeTLS: the webhook served by ServeTLS on bootstrapped
// certificates answers an apiserver-like client that trusts only the CA
// and dials the Service name, picks up renewed certificates without a
// restart, and stops, leaving no goroutine, when its context ends.
func TestServeTLS(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	cs := newFakeWebhookConfigs(fakeWebhookConfig("weft-injector", 1))
	bc := BootstrapConfig{Dir: dir, Service: "weft-injector", Namespace: "weft-system", WebhookConfig: "weft-injector", Client: cs}
	log := slog.New(slog.DiscardHandler)
	certs, err := Bootstrap(t.Context(), bc, time.Now(), log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- ServeTLS(ctx, ln, ServerConfig{CertDir: dir, Handler: newTestWebhook(t, mapLabels)}, log)
	}()

	call := func(ca []byte) (*http.Response, error) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "weft-injector.weft-system.svc"}}
		defer tr.CloseIdleConnections()
		body := readTestdata(t, "review-annotated.json")
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Post("https://"+ln.Addr().String()+"/inject", "application/json", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var review struct {
			Response struct{ Patch []byte } `json:"response"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &review) != nil || len(review.Response.Patch) == 0 {
			t.Errorf("status %d, body %s: want an AdmissionReview with a patch", resp.StatusCode, b)
		}
		return resp, nil
	}
	if _, err := call(certs.CA); err != nil {
		t.Fatalf("call with the bootstrapped CA: %v", err)
	}

	// Renewed certificates (a new Secret, or a new bootstrap) are served
	// without a restart; the old CA no longer verifies the server.
	renewed, _ := GenerateCerts("weft-injector", "weft-system", time.Now())
	future := time.Now().Add(time.Second)
	if err := WriteCerts(dir, renewed); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(dir, CertFile), future, future) // a new mtime even on a coarse clock
	if _, err := call(renewed.CA); err != nil {
		t.Fatalf("call with the renewed CA: %v", err)
	}
	if _, err := call(certs.CA); err == nil {
		t.Error("the old CA still verifies the server after renewal")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeTLS after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("ServeTLS did not return after its context ended")
	}
}

// TestServeTLSNoCertificate: without certificates ServeTLS fails at once,
// naming what is missing, and closes the listener.
func TestServeTLSNoCertificate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = ServeTLS(t.Context(), ln, ServerConfig{CertDir: t.TempDir(), Handler: http.NotFoundHandler()}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), CertFile) {
		t.Errorf("error %v, want one naming %s", err, CertFile)
	}
	if _, err := ln.Accept(); err == nil {
		t.Error("listener still open")
	}
}
