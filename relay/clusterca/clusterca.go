// Package clusterca is the relay's cluster CA: it signs the client
// certificates that identify clusters (from CSRs whose keys never leave the
// cluster) and maps a presented certificate back to the cluster it names.
package clusterca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Identity is what a cluster certificate says about its holder.
type Identity struct {
	Cluster string
	UID     string // the cluster's UID: a deleted and re-created cluster of the same name has another
	// Generation counts registrations; certificates of an older generation are revoked.
	Generation int
	NotBefore  time.Time
	NotAfter   time.Time
}

// uriScheme marks the identity in a certificate's URI SAN:
// clusterconnect://cluster/<name>/<uid>/<generation>.
const uriScheme = "clusterconnect"

func (id Identity) uri() *url.URL {
	return &url.URL{Scheme: uriScheme, Host: "cluster", Path: "/" + id.Cluster + "/" + id.UID + "/" + strconv.Itoa(id.Generation)}
}

// Errors of Verify; the wrapping error says the details (dates, names).
var (
	ErrExpired    = errors.New("certificate expired")
	ErrNotYet     = errors.New("certificate not yet valid")
	ErrUnknownCA  = errors.New("certificate not issued by this relay's cluster CA")
	ErrNoIdentity = errors.New("certificate names no cluster")
	ErrBadCSR     = errors.New("invalid certificate signing request")
)

// CA signs and verifies cluster certificates.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	pool    *x509.CertPool
}

// Generate makes a new CA key pair, PEM encoded.
func Generate() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "clusterconnect cluster CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), nil
}

// Load parses a CA certificate and its private key (PKCS#8, EC or RSA PEM).
func Load(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("cluster CA: no PEM certificate")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("cluster CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("cluster CA: the certificate is not a CA")
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("cluster CA: no PEM private key")
	}
	var key crypto.Signer
	switch kb.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err != nil {
			return nil, fmt.Errorf("cluster CA key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("cluster CA key cannot sign")
		}
		key = s
	case "EC PRIVATE KEY":
		if key, err = x509.ParseECPrivateKey(kb.Bytes); err != nil {
			return nil, fmt.Errorf("cluster CA key: %w", err)
		}
	case "RSA PRIVATE KEY":
		if key, err = x509.ParsePKCS1PrivateKey(kb.Bytes); err != nil {
			return nil, fmt.Errorf("cluster CA key: %w", err)
		}
	default:
		return nil, fmt.Errorf("cluster CA key: unsupported PEM type %q", kb.Type)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, certPEM: certPEM, pool: pool}, nil
}

// CertPEM is the CA certificate.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// ParseCSR decodes a PEM CSR and checks its signature and key: ECDSA P-256 or
// P-384, Ed25519 is not accepted, RSA at least 2048 bits.
func ParseCSR(b []byte) (*x509.CertificateRequest, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: want a PEM \"CERTIFICATE REQUEST\"", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA curve %s not accepted (use P-256 or P-384)", ErrBadCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key of %d bits is too short (use at least 2048)", ErrBadCSR, k.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("%w: key type %T not accepted (use ECDSA P-256)", ErrBadCSR, csr.PublicKey)
	}
	return csr, nil
}

// Issue signs a client certificate for the CSR's public key that identifies
// id (only the key is taken from the CSR). It is valid from now for lifetime.
func (ca *CA) Issue(csr *x509.CertificateRequest, id Identity, now time.Time, lifetime time.Duration) ([]byte, *x509.Certificate, error) {
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	// Backdate a little for clock skew between relay and cluster, but not so
	// much that agents, which renew at a fraction of NotAfter-NotBefore,
	// renew at once when lifetimes are short (tests).
	skew := min(time.Minute, lifetime/10)
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: id.Cluster, Organization: []string{"clusterconnect:clusters"}},
		NotBefore:    now.Add(-skew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.uri()},
	}
	return ca.sign(tmpl, csr)
}

// sign issues tmpl for the CSR's key, PEM and parsed.
func (ca *CA) sign(tmpl *x509.Certificate, csr *x509.CertificateRequest) ([]byte, *x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, nil
}

// Verify checks that chain[0] was issued by this CA for client auth and is
// valid at now, and returns the identity it carries.
func (ca *CA) Verify(chain []*x509.Certificate, now time.Time) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, ErrNoIdentity
	}
	leaf := chain[0]
	var id Identity
	for _, u := range leaf.URIs {
		if u.Scheme != uriScheme || u.Host != "cluster" {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
		if len(parts) != 3 {
			continue
		}
		gen, err := strconv.Atoi(parts[2])
		if err != nil {
			continue
		}
		id = Identity{Cluster: parts[0], UID: parts[1], Generation: gen, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	// Verify at a time inside the validity window first, so that "not from
	// this CA" and "expired" are told apart.
	at := now
	if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		at = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.pool, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUnknownCA, err)
	}
	if id.Cluster == "" {
		return Identity{}, ErrNoIdentity
	}
	if now.After(leaf.NotAfter) {
		return id, fmt.Errorf("%w on %s", ErrExpired, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return id, fmt.Errorf("%w before %s (check the clocks)", ErrNotYet, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return id, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}
