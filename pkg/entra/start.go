package entra

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/trust"
)

// DefaultWarmTimeout bounds the discovery [Options.Start] runs in the
// background when StartConfig.WarmTimeout is zero.
const DefaultWarmTimeout = 30 * time.Second

// issuerTimeout bounds one request of the issuer client.
const issuerTimeout = 30 * time.Second

// IssuerHTTPClient returns the client for the issuer's discovery documents
// and JWKS (and for Graph, which the same --issuer-ca-file covers): it
// trusts the system roots plus IssuerCAFile, and bounds each request to 30 s.
func (o *Options) IssuerHTTPClient() (*http.Client, error) {
	pool, err := trust.Pool(o.IssuerCAFile)
	if err != nil {
		return nil, fmt.Errorf("--issuer-ca-file: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: issuerTimeout}, nil
}

// StartConfig is what a command adds to its [Options] to start a verifier:
// the parts that are not flags. Nil means every default.
type StartConfig struct {
	// HTTPClient reaches the issuer; nil means [Options.IssuerHTTPClient].
	HTTPClient *http.Client
	// Groups resolves groups overage; nil means overage tokens are refused.
	Groups GroupResolver
	// Metrics records verifications; nil records none.
	Metrics *Metrics
	// Logger receives discovery and JWKS events and the warm-up warning;
	// nil discards.
	Logger *slog.Logger
	// WarmTimeout bounds the background discovery; zero means
	// DefaultWarmTimeout.
	WarmTimeout time.Duration
}

// Start builds the verifier of the options and runs discovery of its
// issuers in the background (until it is done, WarmTimeout passes or ctx
// ends), so that the first requests do not wait for it. A failed discovery
// is logged, not returned: the verifier retries when tokens arrive, and a
// server should come up while the issuer is briefly unreachable.
func (o *Options) Start(ctx context.Context, sc *StartConfig) (*Verifier, error) {
	if sc == nil {
		sc = &StartConfig{}
	}
	client := sc.HTTPClient
	if client == nil {
		var err error
		if client, err = o.IssuerHTTPClient(); err != nil {
			return nil, err
		}
	}
	log := sc.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := o.Config()
	cfg.HTTPClient, cfg.Groups, cfg.Metrics, cfg.Logger = client, sc.Groups, sc.Metrics, log
	v, err := NewVerifier(cfg)
	if err != nil {
		return nil, err
	}
	timeout := sc.WarmTimeout
	if timeout <= 0 {
		timeout = DefaultWarmTimeout
	}
	go func() {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := v.Warm(wctx); err != nil {
			log.Warn("issuer discovery at startup failed; tokens will be verified once the issuer answers", "err", err)
		}
	}()
	return v, nil
}
