package apiserverconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Files of the apiserver's client certificate for guard, which Write makes
// in OutDir when no ClientCertFile is given. The certificate and key are
// also embedded in the webhook kubeconfigs; guard takes the CA with
// --webhook-client-ca-file.
const (
	ClientCAFile   = "apiserver-client-ca.crt"
	ClientCertName = "apiserver-client.crt"
	ClientKeyName  = "apiserver-client.key"
)

// clientCertLifetime is how long a generated client certificate (and its
// CA) is valid; Write makes a new pair when less than clientCertRenew is
// left.
const (
	clientCertLifetime = 2 * 365 * 24 * time.Hour
	clientCertRenew    = 30 * 24 * time.Hour
)

// clientPair is the apiserver's generated client certificate.
type clientPair struct {
	certPEM, keyPEM []byte
	caFile          string // the CA guard verifies it by
	renewed         bool   // made now rather than reused
}

// ensureClientPair reuses the pair in dir while it verifies against its CA
// and is valid for more than clientCertRenew, and otherwise makes a new CA
// and pair (then guard must be restarted with the new CA).
func ensureClientPair(dir string, now time.Time) (*clientPair, error) {
	p := &clientPair{caFile: filepath.Join(dir, ClientCAFile)}
	certFile, keyFile := filepath.Join(dir, ClientCertName), filepath.Join(dir, ClientKeyName)
	if err := p.load(certFile, keyFile, now); err == nil {
		return p, nil
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "guard webhook client CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(clientCertLifetime),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(clientCertLifetime),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	p.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	p.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
	p.renewed = true
	// The CA key is not kept: the next renewal makes a new CA.
	for _, f := range []struct {
		path string
		b    []byte
		mode os.FileMode
	}{
		{keyFile, p.keyPEM, 0o600},
		{certFile, p.certPEM, 0o644},
		{p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644},
	} {
		if err := os.WriteFile(f.path, f.b, f.mode); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// load reads an existing pair and checks it: it matches its key, chains to
// the CA file for client auth, and is valid past now+clientCertRenew.
func (p *clientPair) load(certFile, keyFile string, now time.Time) error {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(p.caFile)
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("no CA certificate")
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now.Add(clientCertRenew),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("%s: %w", certFile, err)
	}
	p.certPEM, p.keyPEM = certPEM, keyPEM
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
