package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
)

func TestEnsureDev(t *testing.T) {
	dir := t.TempDir()
	f, err := EnsureDev(dir, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ca1, _ := os.ReadFile(f.CAFile)
	verify := func(host string) error {
		pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return err
		}
		leaf, _ := x509.ParseCertificate(pair.Certificate[0])
		pool := x509.NewCertPool()
		ca, _ := os.ReadFile(f.CAFile)
		pool.AppendCertsFromPEM(ca)
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host})
		return err
	}
	if err := verify("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := verify("relay.example"); err == nil {
		t.Fatal("serving cert verified for a host it was not made for")
	}
	// A new host reissues the serving certificate but keeps the CA.
	if _, err := EnsureDev(dir, []string{"localhost", "127.0.0.1", "relay.example"}); err != nil {
		t.Fatal(err)
	}
	ca2, _ := os.ReadFile(f.CAFile)
	if string(ca1) != string(ca2) {
		t.Fatal("CA changed; clients that trust it would break")
	}
	if err := verify("relay.example"); err != nil {
		t.Fatal(err)
	}
}
