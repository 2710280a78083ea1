// Package trust builds the certificate pools clients verify servers with:
// the system roots, plus the CA certificates of a PEM file when one is given.
package trust

import (
	"crypto/x509"
	"fmt"
	"os"
)

// Pool returns the system roots plus the certificates in the PEM file caFile.
// An empty caFile means the system roots alone.
func Pool(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return SystemPool(), nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool, err := PoolPEM(pem)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", caFile, err)
	}
	return pool, nil
}

// PoolPEM returns the system roots plus the PEM certificates in pem. Empty
// pem means the system roots alone; pem without a certificate is an error.
func PoolPEM(pem []byte) (*x509.CertPool, error) {
	pool := SystemPool()
	if len(pem) > 0 && !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in it")
	}
	return pool, nil
}

// SystemPool is a copy of the system roots, or an empty pool where the
// system has none (the caller's CA file is then the only trust).
func SystemPool() *x509.CertPool {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		return x509.NewCertPool()
	}
	return pool
}
