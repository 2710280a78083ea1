// Package wire encodes and checks the certificates of cluster enrolment and
// renewal between an agent (package identity) and the relay; the request and
// answer types and paths are in pkg/api.
//
//	POST /agent/v1/enroll   (no client certificate)
//	  {"cluster":"<name>","token":"<registration token>","csr":"<PEM CERTIFICATE REQUEST>"}
//	POST /agent/v1/renew    (mTLS with the current certificate)
//	  {"csr":"<PEM CERTIFICATE REQUEST>"}
//
//	200 OK, application/json:
//	  {"certificate":"<PEM leaf, then any intermediates>",
//	   "caBundle":"<PEM CA certificates the agent trusts for the relay>",
//	   "notAfter":"<RFC 3339: the leaf's NotAfter>"}
//	any other status: a Kubernetes Status (kind Status, apiVersion v1,
//	  status Failure, message, reason, code); the agent shows the message
//	  to the operator as it is, so it should say what to do.
//
// The agent generates the key (ECDSA P-256) and never sends it; the CSR's
// subject is informative only: the relay decides the certificate's identity
// (from the token at enrolment, from the presented certificate at renewal).
package wire

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

// notAfterSlack is how far CertificateResponse.NotAfter may be from the
// leaf's NotAfter (it is printed at second precision).
const notAfterSlack = time.Second

// NewResponse encodes an issued chain (leaf first) and CA bundle.
func NewResponse(chain, caBundle []*x509.Certificate) api.CertificateResponse {
	return api.CertificateResponse{
		Certificate: string(EncodeCertificates(chain...)),
		CABundle:    string(EncodeCertificates(caBundle...)),
		NotAfter:    chain[0].NotAfter.UTC().Format(time.RFC3339),
	}
}

// Issued is a parsed api.CertificateResponse.
type Issued struct {
	Chain    []*x509.Certificate // leaf first; never empty
	CABundle []*x509.Certificate // may be empty
}

// Leaf is the issued certificate.
func (i *Issued) Leaf() *x509.Certificate { return i.Chain[0] }

// ParseResponse checks and parses a 200 answer. The leaf decides the
// lifetime; NotAfter, if present, must agree with it.
func ParseResponse(body []byte) (*Issued, error) {
	var r api.CertificateResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("relay answer is not the expected JSON: %w", err)
	}
	chain, err := ParseCertificates([]byte(r.Certificate))
	if err != nil {
		return nil, fmt.Errorf("relay answer: certificate: %w", err)
	}
	if len(chain) == 0 {
		return nil, errors.New("relay answer: certificate is empty")
	}
	cas, err := ParseCertificates([]byte(r.CABundle))
	if err != nil {
		return nil, fmt.Errorf("relay answer: caBundle: %w", err)
	}
	if r.NotAfter != "" {
		na, err := time.Parse(time.RFC3339, r.NotAfter)
		if err != nil {
			return nil, fmt.Errorf("relay answer: notAfter: %w", err)
		}
		if d := na.Sub(chain[0].NotAfter); d > notAfterSlack || d < -notAfterSlack {
			return nil, fmt.Errorf("relay answer: notAfter %s does not match the certificate's %s", r.NotAfter, chain[0].NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return &Issued{Chain: chain, CABundle: cas}, nil
}

// ParseCertificates parses a PEM bundle that holds only certificates. Text
// around the blocks (comments) is allowed; other block types are not, so a
// key sent by mistake is refused rather than stored. Empty input is an empty
// bundle.
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			if len(certs) == 0 && len(bytes.TrimSpace(b)) > 0 {
				return nil, errors.New("no PEM block")
			}
			return certs, nil
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %q, want CERTIFICATE", len(certs)+1, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
}

// EncodeCertificates is the PEM bundle of certs.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// ParseCSR parses a PEM CERTIFICATE REQUEST and checks its signature (the
// requester holds the key). Policy (key type, subject) is the caller's.
func ParseCSR(s string) (*x509.CertificateRequest, error) {
	blk, rest := pem.Decode([]byte(s))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("csr: want one PEM CERTIFICATE REQUEST")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("csr: data after the CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	return csr, nil
}

// StatusMessage returns the message and reason of a Kubernetes Status; ok
// is false if body has no message.
func StatusMessage(body []byte) (message, reason string, ok bool) {
	var m struct {
		Message string `json:"message"`
	}
	var r struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal(body, &m) != nil || m.Message == "" {
		return "", "", false
	}
	// Apart, so that a reason of an odd type does not hide the message.
	_ = json.Unmarshal(body, &r)
	return m.Message, r.Reason, true
}
