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
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/clusteragent/identity/wire"
)

// requestTimeout bounds one call to the relay.
const requestTimeout = 30 * time.Second

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
	if msg, reason, ok := wire.StatusMessage(body); ok {
		return &RelayError{StatusCode: code, Reason: reason, Message: msg}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	if s == "" {
		s = http.StatusText(code)
	}
	if s == "" {
		s = fmt.Sprintf("HTTP status %d", code)
	}
	return &RelayError{StatusCode: code, Message: s}
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
func certificate(is *wire.Issued, key crypto.Signer, now time.Time) (*tls.Certificate, error) {
	leaf := is.Leaf()
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("the relay issued a certificate for another key")
	}
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("the relay issued a certificate that expired on %s (is the clock right?)", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, x := range is.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
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
func (id *Identity) call(ctx context.Context, tlsCfg *tls.Config, path string, req any) (*wire.Issued, error) {
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
	data, err := io.ReadAll(io.LimitReader(resp.Body, api.MaxAgentBody+1))
	if err != nil {
		return nil, fmt.Errorf("read the relay's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, relayError(resp.StatusCode, data)
	}
	if len(data) > api.MaxAgentBody {
		return nil, fmt.Errorf("relay answer is larger than %d bytes", api.MaxAgentBody)
	}
	return wire.ParseResponse(data)
}
