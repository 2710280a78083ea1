package guard

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
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/guard/apiserverconfig"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// into dir as name.crt and name.key.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// startGuard runs guard (authorization only) with o's webhook client
// settings against a fake relay, until the test ends, and returns its
// webhook address.
func startGuard(t *testing.T, dir string, mod func(*Options)) string {
	t.Helper()
	relay := newFakeRelay(t)
	relayCA := filepath.Join(dir, "relay-ca.crt")
	os.WriteFile(relayCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: relay.ts.Certificate().Raw}), 0o600)
	o := NewOptions()
	o.Listen, o.HealthListen, o.ShutdownTimeout = "127.0.0.1:0", "", 0
	o.TLSCertFile, o.TLSKeyFile = selfSigned(t, dir, "guard")
	o.ClientCertFile, o.ClientKeyFile = selfSigned(t, dir, "cluster")
	o.RelayURL, o.RelayCAFile, o.DisableAuthn = relay.ts.URL, relayCA, true
	mod(o)
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, up := make(chan error, 1), make(chan string, 1)
	go func() { done <- Run(ctx, o, slog.New(slog.DiscardHandler), func(addr, _ string) { up <- addr }) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case addr := <-up:
		return addr
	case err := <-done:
		t.Fatalf("Run: %v", err)
		return ""
	}
}

// A system: user's review: guard answers it without asking the relay.
const noOpinionReview = `{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"system:kube-scheduler","resourceAttributes":{"verb":"get","resource":"pods"}}}`

// By default guard requires the apiserver's client certificate, and the
// webhook kubeconfig `guard config` writes carries one it accepts.
func TestRunRequiresTheAPIServersCertificate(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "apiserver")
	var cfg *apiserverconfig.Files
	addr := startGuard(t, dir, func(o *Options) {
		gc := apiserverconfig.NewOptions()
		gc.URL, gc.CAFile, gc.OutDir, gc.NoAuthn = "https://127.0.0.1:1", o.TLSCertFile, out, true
		var err error
		if cfg, err = gc.Write(); err != nil {
			t.Fatal(err)
		}
		o.WebhookClientCAFile = cfg.WebhookClientCAFile
	})
	kc, err := clientcmd.BuildConfigFromFlags("", cfg.AuthzKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + addr + SubjectAccessReviewPath
	apiserver, err := rest.HTTPClientFor(kc)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := apiserver.Post(url, "application/json", strings.NewReader(noOpinionReview))
	if err != nil {
		t.Fatalf("the apiserver's review: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"allowed":false`)) {
		t.Errorf("the apiserver's review: HTTP %d %s", resp.StatusCode, b)
	}

	// Trusting guard, but without a client certificate: refused in the
	// handshake.
	anon := rest.CopyConfig(kc)
	anon.CertData, anon.KeyData = nil, nil
	client, err := rest.HTTPClientFor(anon)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := client.Post(url, "application/json", strings.NewReader(noOpinionReview)); err == nil {
		resp.Body.Close()
		t.Errorf("a client without a certificate got HTTP %d", resp.StatusCode)
	}
	// A certificate of another CA: refused too.
	certFile, keyFile := selfSigned(t, dir, "intruder")
	other := rest.CopyConfig(anon)
	other.CertFile, other.KeyFile = certFile, keyFile
	if client, err = rest.HTTPClientFor(other); err != nil {
		t.Fatal(err)
	}
	if resp, err := client.Post(url, "application/json", strings.NewReader(noOpinionReview)); err == nil {
		resp.Body.Close()
		t.Errorf("a client with another CA's certificate got HTTP %d", resp.StatusCode)
	}
}

// --allow-anonymous-webhook-clients serves clients without a certificate.
func TestRunAllowAnonymousWebhookClients(t *testing.T) {
	dir := t.TempDir()
	var serving string
	addr := startGuard(t, dir, func(o *Options) {
		o.AllowAnonymousWebhookClients = true
		serving = o.TLSCertFile
	})
	caPEM, _ := os.ReadFile(serving)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("https://"+addr+SubjectAccessReviewPath, "application/json", strings.NewReader(noOpinionReview))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HTTP %d", resp.StatusCode)
	}
}
