package keypair

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
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func pair(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := pair(t, "one")
	write(t, cf, c1)
	write(t, kf, k1)
	now := time.Unix(1000, 0)
	r, err := New(cf, kf, &Options{CheckInterval: time.Second, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	cn := func() (string, uint64) {
		c, g := r.Current()
		return c.Leaf.Subject.CommonName, g
	}
	if n, g := cn(); n != "one" || g != 0 {
		t.Fatalf("%s %d", n, g)
	}
	c2, k2 := pair(t, "two")
	write(t, cf, c2) // the key is still the old one: half a rotation
	now = now.Add(time.Second)
	if n, g := cn(); n != "one" || g != 0 {
		t.Errorf("half-rotated pair: got %s %d, want the old pair kept", n, g)
	}
	write(t, kf, k2)
	now = now.Add(500 * time.Millisecond)
	if n, _ := cn(); n != "one" {
		t.Error("files read before the check interval passed")
	}
	now = now.Add(500 * time.Millisecond)
	if n, g := cn(); n != "two" || g != 1 {
		t.Errorf("rotated pair: got %s %d", n, g)
	}
	os.Remove(cf)
	now = now.Add(time.Second)
	if c, err := r.GetClientCertificate(nil); err != nil || c.Leaf.Subject.CommonName != "two" {
		t.Errorf("removed file: %v %v", c, err)
	}
	if c, err := r.GetCertificate(nil); err != nil || c.Leaf.Subject.CommonName != "two" {
		t.Errorf("GetCertificate: %v %v", c, err)
	}
}

func TestNewFails(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if _, err := New(cf, kf, nil); err == nil {
		t.Error("missing files accepted")
	}
	c1, _ := pair(t, "one")
	_, k2 := pair(t, "two")
	write(t, cf, c1)
	write(t, kf, k2)
	if _, err := New(cf, kf, nil); err == nil {
		t.Error("mismatched pair accepted")
	}
}
