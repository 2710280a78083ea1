package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testCA(t *testing.T) (*x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "trust test CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestPoolAddsTheFile(t *testing.T) {
	ca, p := testCA(t)
	f := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(f, p, 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err := Pool(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatalf("the file's CA is not trusted: %v", err)
	}
	if _, err := ca.Verify(x509.VerifyOptions{Roots: SystemPool()}); err == nil {
		t.Fatal("the test CA verifies against the system roots alone; the test proves nothing")
	}
}

func TestPoolErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Pool(filepath.Join(dir, "missing.crt")); err == nil || !strings.Contains(err.Error(), "read CA file") {
		t.Fatalf("missing file: err = %v", err)
	}
	junk := filepath.Join(dir, "junk.crt")
	os.WriteFile(junk, []byte("not a certificate"), 0o600)
	if _, err := Pool(junk); err == nil || !strings.Contains(err.Error(), "no PEM certificate") || !strings.Contains(err.Error(), junk) {
		t.Fatalf("junk file: err = %v", err)
	}
	if p, err := Pool(""); err != nil || p == nil {
		t.Fatalf("empty file name: %v, %v", p, err)
	}
}
