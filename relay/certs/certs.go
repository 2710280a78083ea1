// Package certs creates and loads the relay's TLS material: a development CA
// and a serving certificate signed by it, made on first start when the
// operator configured none, and kept in the relay's data directory.
package certs

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
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Files names the PEM files of a serving certificate and the CA that clients
// trust for it.
type Files struct {
	CertFile, KeyFile, CAFile string
}

// DevFiles are the file names used in a data directory.
func DevFiles(dir string) Files {
	return Files{
		CertFile: filepath.Join(dir, "serving.crt"),
		KeyFile:  filepath.Join(dir, "serving.key"),
		CAFile:   filepath.Join(dir, "ca.crt"),
	}
}

// EnsureDev makes sure dir holds a development CA (ca.crt, ca.key) and a
// serving certificate for hosts signed by it, creating what is missing. A
// serving certificate that lacks one of hosts, or expires within 30 days, is
// replaced; the CA is kept so that clients that trust it keep working.
func EnsureDev(dir string, hosts []string) (Files, error) {
	f := DevFiles(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, err
	}
	caKeyFile := filepath.Join(dir, "ca.key")
	ca, caKey, err := loadPair(f.CAFile, caKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		ca, caKey, err = newCA("clusterconnect relay dev CA")
		if err == nil {
			err = writePair(f.CAFile, caKeyFile, ca, caKey)
		}
	}
	if err != nil {
		return f, fmt.Errorf("relay CA in %s: %w", dir, err)
	}
	cert, _, err := loadPair(f.CertFile, f.KeyFile)
	if err == nil && covers(cert, hosts) && time.Until(cert.NotAfter) > 30*24*time.Hour && cert.CheckSignatureFrom(ca) == nil {
		return f, nil
	}
	cert, key, err := newServing(ca, caKey, hosts)
	if err != nil {
		return f, err
	}
	if err := writePair(f.CertFile, f.KeyFile, cert, key); err != nil {
		return f, err
	}
	return f, nil
}

func covers(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(c.DNSNames, h) {
			return false
		}
	}
	return true
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

func newCA(cn string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func newServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "clusterconnect relay"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func loadPair(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		if _, statErr := os.Stat(certFile); errors.Is(statErr, os.ErrNotExist) {
			return nil, nil, statErr
		}
		return nil, nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not an ECDSA key", keyFile)
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	return c, key, err
}

func writePair(certFile, keyFile string, c *x509.Certificate, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644)
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
