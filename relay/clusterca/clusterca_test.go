package clusterca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"testing"
	"time"
)

func newCA(t *testing.T) *CA {
	t.Helper()
	c, k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := Load(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func csrPEM(t *testing.T, curve elliptic.Curve) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(curve, rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "whatever"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestIssueVerify(t *testing.T) {
	ca := newCA(t)
	csr, err := ParseCSR(csrPEM(t, elliptic.P256()))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	id := Identity{Cluster: "prod-eu", UID: "u-1", Generation: 3}
	_, cert, err := ca.Issue(csr, id, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ca.Verify([]*x509.Certificate{cert}, now)
	if err != nil || got.Cluster != "prod-eu" || got.UID != "u-1" || got.Generation != 3 {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
	if cert.Subject.CommonName != "prod-eu" {
		t.Errorf("subject from the CSR leaked into the certificate: %s", cert.Subject)
	}
	if _, err := ca.Verify([]*x509.Certificate{cert}, now.Add(2*time.Hour)); !errors.Is(err, ErrExpired) {
		t.Errorf("after expiry: %v, want ErrExpired", err)
	}
	other := newCA(t)
	if _, err := other.Verify([]*x509.Certificate{cert}, now); !errors.Is(err, ErrUnknownCA) {
		t.Errorf("other CA: %v, want ErrUnknownCA", err)
	}
	// A self-signed certificate carrying a cluster identity is refused.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: serial(), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: cert.URIs}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	self, _ := x509.ParseCertificate(der)
	if _, err := ca.Verify([]*x509.Certificate{self}, now); !errors.Is(err, ErrUnknownCA) {
		t.Errorf("self-signed: %v, want ErrUnknownCA", err)
	}
}

func TestParseCSRRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"not pem":   []byte("hello"),
		"wrong pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"garbage":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}),
		"p224":      csrPEM(t, elliptic.P224()),
	} {
		if _, err := ParseCSR(b); !errors.Is(err, ErrBadCSR) {
			t.Errorf("%s: %v, want ErrBadCSR", name, err)
		}
	}
	// A CSR whose signature does not match its key.
	good := csrPEM(t, elliptic.P256())
	blk, _ := pem.Decode(good)
	blk.Bytes[len(blk.Bytes)-5] ^= 0xff
	if _, err := ParseCSR(pem.EncodeToMemory(blk)); !errors.Is(err, ErrBadCSR) {
		t.Errorf("tampered: %v, want ErrBadCSR", err)
	}
}

func FuzzParseCSR(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := ParseCSR(b)
		if err == nil && csr.CheckSignature() != nil {
			t.Fatal("accepted a CSR with a bad signature")
		}
	})
}
