package checkaccess

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *ca {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cluster CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &ca{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (c *ca) issue(t *testing.T, cn string, serial int64) (certPEM, keyPEM []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

// mtlsRelay answers checkAccess with the client certificate's serial in
// the reason, and refuses clients without a certificate.
func mtlsRelay(t *testing.T, clusterCA *ca) (*httptest.Server, string) {
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			apistatus.Error(w, 401, "no client certificate")
			return
		}
		var req api.CheckAccessRequest
		json.NewDecoder(r.Body).Decode(&req)
		if req.Namespace == "status" {
			apistatus.Error(w, 400, "bad namespace")
			return
		}
		if req.Namespace == "partial" {
			json.NewEncoder(w).Encode(api.CheckAccessResponse{})
			return
		}
		if req.Namespace == "garbage" {
			w.Write([]byte("<html>"))
			return
		}
		var resp api.CheckAccessResponse
		for _, a := range req.Actions {
			resp.Decisions = append(resp.Decisions, api.Decision{Action: a, Allowed: true, Reason: "serial " + r.TLS.PeerCertificates[0].SerialNumber.String()})
		}
		json.NewEncoder(w).Encode(resp)
	}))
	pool := x509.NewCertPool()
	pool.AddCert(clusterCA.cert)
	ts.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600)
	return ts, caFile
}

func TestMTLSAndRotation(t *testing.T) {
	clusterCA := newCA(t)
	ts, caFile := mtlsRelay(t, clusterCA)
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := clusterCA.issue(t, "cluster", 101)
	os.WriteFile(cf, c1, 0o600)
	os.WriteFile(kf, k1, 0o600)
	c, err := New(&Config{RelayURL: ts.URL + "/", CertFile: cf, KeyFile: kf, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	check := func() string {
		t.Helper()
		resp, err := c.Check(t.Context(), &api.CheckAccessRequest{Subject: api.Subject{OID: "o"}, Actions: []string{"a1", "a2"}, Namespace: "ns"})
		if err != nil {
			t.Fatal(err)
		}
		d, ok := DecisionFor(resp, "a2")
		if !ok || !d.Allowed {
			t.Fatalf("%+v", resp)
		}
		return d.Reason
	}
	if r := check(); r != "serial 101" {
		t.Fatalf("reason %q", r)
	}
	// Rotation: the next call uses the new certificate, even over a
	// connection pool that holds a connection made with the old one.
	c2, k2 := clusterCA.issue(t, "cluster", 202)
	os.WriteFile(cf, c2, 0o600)
	os.WriteFile(kf, k2, 0o600)
	deadline := time.Now().Add(5 * time.Second)
	for check() != "serial 202" {
		if time.Now().After(deadline) {
			t.Fatal("the rotated certificate was never used")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c.Certificate().Leaf.SerialNumber.Int64() != 202 {
		t.Error("Certificate() does not show the rotated certificate")
	}
}

func TestErrors(t *testing.T) {
	clusterCA := newCA(t)
	ts, caFile := mtlsRelay(t, clusterCA)
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := clusterCA.issue(t, "cluster", 1)
	os.WriteFile(cf, c1, 0o600)
	os.WriteFile(kf, k1, 0o600)
	c, err := New(&Config{RelayURL: ts.URL, CertFile: cf, KeyFile: kf, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Check(t.Context(), &api.CheckAccessRequest{Subject: api.Subject{OID: "o"}, Actions: []string{"a"}, Namespace: "status"})
	se, refused := Refused(err)
	if !refused || se.Code != 400 || se.Message != "bad namespace" {
		t.Errorf("status error: %v", err)
	}
	for _, ns := range []string{"partial", "garbage"} {
		_, err = c.Check(t.Context(), &api.CheckAccessRequest{Subject: api.Subject{OID: "o"}, Actions: []string{"a"}, Namespace: ns})
		if _, refused := Refused(err); err == nil || refused {
			t.Errorf("%s: %v", ns, err)
		}
	}
	if _, refused := Refused(&StatusError{Code: 503}); refused {
		t.Error("503 is not a refusal")
	}
	// Without trusting the relay's CA: a transport error.
	c2, _ := New(&Config{RelayURL: ts.URL, CertFile: cf, KeyFile: kf})
	defer c2.Close()
	if _, err := c2.Check(t.Context(), &api.CheckAccessRequest{Subject: api.Subject{OID: "o"}, Actions: []string{"a"}}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted relay: %v", err)
	}
	for _, cfg := range []*Config{nil, {RelayURL: "http://x", CertFile: cf, KeyFile: kf}, {RelayURL: "https://x"}, {RelayURL: "https://x", CertFile: cf, KeyFile: cf},
		{RelayURL: "https://x", CertFile: cf, KeyFile: kf, CAFile: cf + ".missing"}, {RelayURL: "https://x", CertFile: cf, KeyFile: kf, CAFile: kf}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

func TestStatusMessage(t *testing.T) {
	if m := statusMessage([]byte(`{"kind":"Status","message":"m","code":403}`)); m != "m" {
		t.Error(m)
	}
	if m := statusMessage([]byte(strings.Repeat("x", 300))); len(m) > 210 {
		t.Error(len(m))
	}
}
