package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Relay endpoints, relative to Config.RelayURL.
const (
	enrollPath = "/agent/v1/enroll"
	renewPath  = "/agent/v1/renew"
)

const (
	// requestTimeout bounds one call to the relay.
	requestTimeout = 30 * time.Second
	// maxResponse bounds what is read of a relay answer: a certificate chain
	// and a CA bundle are a few KiB.
	maxResponse = 1 << 20
	// notAfterSlack is how far the response's notAfter may differ from the
	// certificate's (the relay may print it truncated to seconds).
	notAfterSlack = time.Second
)

type enrollRequest struct {
	Cluster string `json:"cluster"`
	Token   string `json:"token"`
	CSR     string `json:"csr"`
}

type renewRequest struct {
	CSR string `json:"csr"`
}

type issueResponse struct {
	Certificate string `json:"certificate"`
	CABundle    string `json:"caBundle"`
	NotAfter    string `json:"notAfter"`
}

// issued is a parsed relay answer.
type issued struct {
	chain [][]byte // DER, leaf first
	leaf  *x509.Certificate
	caPEM []byte // normalised: only CERTIFICATE blocks; empty if the relay sent none
}

// RelayError is the relay refusing an enrolment or renewal. Message is the
// message of the relay's Kubernetes Status, as the relay wrote it, e.g.
// "registration token already used".
type RelayError struct {
	StatusCode int
	// Reason is the Status reason (e.g. "Unauthorized"); may be empty.
	Reason  string
	Message string
}

func (e *RelayError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.StatusCode)
}

// relayError builds a RelayError from a non-200 answer: the Status message
// if there is one, else the body's first bytes, else the status text.
func relayError(code int, body []byte) *RelayError {
	var st struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
		Reason  string `json:"reason"`
	}
	e := &RelayError{StatusCode: code}
	if json.Unmarshal(body, &st) == nil && st.Message != "" {
		e.Message, e.Reason = st.Message, st.Reason
		return e
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	if s == "" {
		s = http.StatusText(code)
	}
	e.Message = s
	return e
}

// parseResponse checks and parses the relay's 200 answer. The certificate
// decides the lifetime; notAfter must agree with it.
func parseResponse(body []byte) (*issued, error) {
	var r issueResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("relay answer is not the expected JSON: %w", err)
	}
	chain, err := parseCertsPEM([]byte(r.Certificate))
	if err != nil {
		return nil, fmt.Errorf("relay answer: certificate: %w", err)
	}
	if len(chain) == 0 {
		return nil, errors.New("relay answer: certificate is empty")
	}
	cas, err := parseCertsPEM([]byte(r.CABundle))
	if err != nil {
		return nil, fmt.Errorf("relay answer: caBundle: %w", err)
	}
	out := &issued{leaf: chain[0]}
	for _, c := range chain {
		out.chain = append(out.chain, c.Raw)
	}
	for _, c := range cas {
		out.caPEM = append(out.caPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if r.NotAfter != "" {
		na, err := time.Parse(time.RFC3339, r.NotAfter)
		if err != nil {
			return nil, fmt.Errorf("relay answer: notAfter: %w", err)
		}
		if d := na.Sub(out.leaf.NotAfter); d > notAfterSlack || d < -notAfterSlack {
			return nil, fmt.Errorf("relay answer: notAfter %s does not match the certificate's %s", r.NotAfter, out.leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return out, nil
}

// parseCertsPEM parses a PEM bundle that holds only certificates. Text
// around the blocks (comments) is allowed; other block types are not, so a
// key sent by mistake is refused rather than stored.
func parseCertsPEM(b []byte) ([]*x509.Certificate, error) {
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

// newKeyAndCSR makes a fresh key and a request for it. The subject is only
// informative: the relay decides the certificate's identity.
func newKeyAndCSR(cluster string) (*ecdsa.PrivateKey, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cluster},
	}, key)
	if err != nil {
		return nil, "", fmt.Errorf("create certificate request: %w", err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// certificate joins what the relay issued with the key, after checking the
// certificate is for that key and still valid at now.
func (is *issued) certificate(key crypto.Signer, now time.Time) (*tls.Certificate, error) {
	pub, ok := is.leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("the relay issued a certificate for another key")
	}
	if !now.Before(is.leaf.NotAfter) {
		return nil, fmt.Errorf("the relay issued a certificate that expired on %s (is the clock right?)", is.leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &tls.Certificate{Certificate: is.chain, PrivateKey: key, Leaf: is.leaf}, nil
}

// relayTransport is a one-shot transport for enrol and renew: no idle
// connections are kept, so each call handshakes with the certificate given.
func relayTransport(cfg *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableKeepAlives:   true,
		ForceAttemptHTTP2:   true,
	}
}

// call posts req to the relay's path and parses the answer.
func (id *Identity) call(ctx context.Context, tlsCfg *tls.Config, path string, req any) (*issued, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, id.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", "clusterconnect-agent")
	tr := relayTransport(tlsCfg)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("read the relay's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, relayError(resp.StatusCode, data)
	}
	if len(data) > maxResponse {
		return nil, fmt.Errorf("relay answer is larger than %d bytes", maxResponse)
	}
	return parseResponse(data)
}
