// Package checkaccess is guard's client of the relay's checkAccess API.
//
// Wire format (the types are package pkg/api's; the relay serves it):
//
//	POST {relay}/agent/v1/checkaccess          mTLS with the cluster certificate
//	{"subject": {"oid": "<user object id>", "groups": ["<group id>", …]},
//	 "actions": ["Microsoft.Kubernetes/connectedClusters/pods/read"],
//	 "namespace": "team-a"}                     ("" or absent: cluster scope)
//
//	200 {"decisions": [{"action": "…", "allowed": true, "reason": "Viewer assigned to group 1234 at namespace team-a"}]}
//
// The relay maps the certificate to the cluster and answers only for it.
// Errors are Kubernetes Status objects; [Client.Check] returns them as
// *[StatusError]: a 4xx is the relay's answer (guard caches it as a deny),
// anything else — 5xx, transport errors, timeouts — means the relay could
// not answer.
package checkaccess

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/keypair"
	"github.com/clusterconnect/clusterconnect/pkg/trust"
)

// DefaultTimeout bounds one call when Config.Timeout is zero.
const DefaultTimeout = 3 * time.Second

// DecisionFor returns the decision of resp for action.
func DecisionFor(resp *api.CheckAccessResponse, action string) (api.Decision, bool) {
	for _, d := range resp.Decisions {
		if d.Action == action {
			return d, true
		}
	}
	return api.Decision{}, false
}

// StatusError is a non-200 answer of the relay.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("relay answered checkAccess with HTTP %d: %s", e.Code, e.Message)
}

// Refused reports whether err is a 4xx answer: the relay's final word on
// the request (a bad request, or a cluster certificate it does not accept),
// as opposed to the relay being unable to answer.
func Refused(err error) (*StatusError, bool) {
	var se *StatusError
	if errors.As(err, &se) && se.Code >= 400 && se.Code < 500 {
		return se, true
	}
	return nil, false
}

// Config configures a [Client].
type Config struct {
	// RelayURL is the relay's base URL, https://host:port. Required.
	RelayURL string
	// CertFile and KeyFile are the cluster certificate and key (the
	// identity Secret's tls.crt and tls.key), reloaded when they change.
	// Required unless HTTPClient is set.
	CertFile, KeyFile string
	// CAFile is trusted for the relay besides the system roots (the
	// identity Secret's ca.crt); empty means the system roots only.
	CAFile string
	// HTTPClient replaces the client built from the files (tests).
	HTTPClient *http.Client
	// Timeout bounds one call; zero means DefaultTimeout.
	Timeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// Client calls checkAccess. It is safe for concurrent use.
type Client struct {
	url     string
	client  *http.Client
	timeout time.Duration
	pair    *keypair.Reloader
	log     *slog.Logger

	mu  sync.Mutex
	gen uint64 // key pair generation the idle connections were made with
}

// New checks cfg and loads the key pair.
func New(cfg *Config) (*Client, error) {
	if cfg == nil || cfg.RelayURL == "" {
		return nil, errors.New("checkaccess: the relay URL is required")
	}
	if !strings.HasPrefix(cfg.RelayURL, "https://") {
		return nil, fmt.Errorf("checkaccess: relay URL %q: want https://", cfg.RelayURL)
	}
	c := &Client{url: strings.TrimSuffix(cfg.RelayURL, "/") + api.CheckAccessPath, client: cfg.HTTPClient, timeout: cfg.Timeout, log: cfg.Logger}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.client != nil {
		return c, nil
	}
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("checkaccess: the cluster certificate and key files are required")
	}
	var err error
	c.pair, err = keypair.New(cfg.CertFile, cfg.KeyFile, &keypair.Options{Logger: c.log})
	if err != nil {
		return nil, fmt.Errorf("checkaccess: cluster certificate: %w", err)
	}
	roots, err := trust.Pool(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("checkaccess: relay CA: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the relay is dialled directly, as the agents do
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, GetClientCertificate: c.pair.GetClientCertificate}
	tr.MaxIdleConnsPerHost = 16
	c.client = &http.Client{Transport: tr}
	return c, nil
}

// Certificate returns the cluster certificate in use (nil with HTTPClient).
func (c *Client) Certificate() *tls.Certificate {
	if c.pair == nil {
		return nil
	}
	cert, _ := c.pair.Current()
	return cert
}

// rotate drops idle connections made with an older key pair, so that the
// next call presents the new certificate.
func (c *Client) rotate() {
	if c.pair == nil {
		return
	}
	_, gen := c.pair.Current()
	c.mu.Lock()
	changed := gen != c.gen
	c.gen = gen
	c.mu.Unlock()
	if changed {
		c.client.CloseIdleConnections()
	}
}

// Close drops idle connections.
func (c *Client) Close() { c.client.CloseIdleConnections() }

// Check asks the relay. A non-200 answer is a *StatusError; a response
// without a decision for every asked action is an error too.
func (c *Client) Check(ctx context.Context, req *api.CheckAccessRequest) (*api.CheckAccessResponse, error) {
	c.rotate()
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("checkAccess at %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, api.MaxAgentBody))
	if err != nil {
		return nil, fmt.Errorf("checkAccess at %s: read the answer: %w", c.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{Code: resp.StatusCode, Message: statusMessage(b)}
	}
	var out api.CheckAccessResponse
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("checkAccess at %s: the answer is not JSON of the documented shape: %w", c.url, err)
	}
	for _, a := range req.Actions {
		if _, ok := DecisionFor(&out, a); !ok {
			return nil, fmt.Errorf("checkAccess at %s: the answer has no decision for %s", c.url, a)
		}
	}
	return &out, nil
}

// statusMessage is the message of a Status body, or the body's start.
func statusMessage(b []byte) string {
	var st struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &st) == nil && st.Message != "" {
		return st.Message
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
