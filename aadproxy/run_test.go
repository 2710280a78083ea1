package aadproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/test/oidc"
)

// servingPair writes a self-signed serving certificate for 127.0.0.1 named
// cn to certFile and keyFile.
func servingPair(t *testing.T, cn, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	// The key first: a reader that sees the new certificate with the old
	// key keeps the old pair and tries again.
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// servedName is the common name of the certificate addr serves.
func servedName(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// Run serves an Entra user through to the apiserver, and picks up a new
// serving certificate without a restart.
func TestRunReloadsServingCertificate(t *testing.T) {
	iss, err := oidc.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	api, _ := upstream(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "`+api.URL+`", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: proxy-own-token}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)

	o := NewOptions()
	o.Listen, o.HealthListen, o.Kubeconfig = "127.0.0.1:0", "", kubeconfig
	o.TLSCertFile, o.TLSKeyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	servingPair(t, "first", o.TLSCertFile, o.TLSKeyFile)
	o.Token.IssuerURL, o.Token.V1IssuerURL = iss.URL, iss.V1Base()
	o.Token.IssuerCAFile = filepath.Join(dir, "issuer-ca.crt")
	os.WriteFile(o.Token.IssuerCAFile, iss.CAPEM, 0o600)
	const tenant, audience = "11111111-2222-3333-4444-555555555555", "api://clusterconnect"
	o.Token.Tenants, o.Token.Audiences = []string{tenant}, []string{audience}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- Run(ctx, o, slog.New(slog.DiscardHandler), func(addr, _ string) { addrc <- addr })
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}

	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "https://"+addr+"/api/v1/namespaces", nil)
	req.Header.Set("Authorization", "Bearer "+iss.MustMint(oidc.Token{Version: 2, Tenant: tenant, Audience: audience, UPN: "alice@example.com", OID: "oid-alice"}))
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var s seen
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(s.User) != 1 || s.User[0] != "alice@example.com" {
		t.Errorf("Entra user through Run: HTTP %d %+v", resp.StatusCode, s)
	}

	if got := servedName(t, addr); got != "first" {
		t.Fatalf("serving %q, want first", got)
	}
	servingPair(t, "second", o.TLSCertFile, o.TLSKeyFile)
	deadline := time.Now().Add(10 * time.Second)
	for servedName(t, addr) != "second" {
		if time.Now().After(deadline) {
			t.Fatal("the new serving certificate was not picked up")
		}
		time.Sleep(50 * time.Millisecond)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
