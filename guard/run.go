package guard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clusterconnect/clusterconnect/aadproxy/token"
	"github.com/clusterconnect/clusterconnect/guard/authz"
	"github.com/clusterconnect/clusterconnect/guard/cache"
	"github.com/clusterconnect/clusterconnect/guard/checkaccess"
	"github.com/clusterconnect/clusterconnect/guard/keypair"
)

// Run serves guard with validated options until ctx is done, then drains
// for at most o.ShutdownTimeout. ready, if not nil, is called with the
// bound webhook address (and the health address, or "") once both
// listeners accept connections.
func Run(ctx context.Context, o *Options, log *slog.Logger, ready func(addr, healthAddr string)) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := NewMetrics(reg)

	serving, err := keypair.New(o.TLSCertFile, o.TLSKeyFile, &keypair.Options{Logger: log.With("component", "serving-cert")})
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: serving.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
	if o.WebhookClientCAFile != "" {
		pool, err := loadPool(o.WebhookClientCAFile)
		if err != nil {
			return fmt.Errorf("--webhook-client-ca-file: %w", err)
		}
		tlsCfg.ClientCAs, tlsCfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}

	client, err := checkaccess.New(&checkaccess.Config{
		RelayURL: o.RelayURL, CertFile: o.ClientCertFile, KeyFile: o.ClientKeyFile, CAFile: o.RelayCAFile,
		Timeout: o.RelayTimeout, Logger: log.With("component", "checkaccess"),
	})
	if err != nil {
		return err
	}
	defer client.Close()
	paths, err := authz.NewPathMatcher(o.AllowedPaths)
	if err != nil {
		return err
	}
	decisions := cache.New(&cache.Config{Size: o.CacheSize, AllowedTTL: o.AllowedTTL, DeniedTTL: o.DeniedTTL})
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "guard", Name: "authz_cache_entries", Help: "Decisions in the cache."},
		func() float64 { return float64(decisions.Len()) }))
	authorizer, err := NewAuthorizer(AuthorizerConfig{
		Checker: client, Cache: decisions, SkipUsers: o.SkipUsers, SkipGroups: o.SkipGroups, AllowedPaths: paths,
		GroupsPrefix: o.GroupsPrefix, FailureMode: FailureMode(o.RelayFailureMode), RelayBackoff: o.RelayBackoff,
		Metrics: metrics, Logger: log.With("component", "authz"),
	})
	if err != nil {
		return err
	}
	var verifier *token.Verifier
	if !o.DisableAuthn {
		issuerClient, err := issuerHTTPClient(o.IssuerCAFile)
		if err != nil {
			return err
		}
		verifier, err = token.NewVerifier(&token.Config{
			IssuerURL: o.IssuerURL, V1IssuerURL: o.V1IssuerURL, Tenants: o.Tenants, Audiences: o.Audiences,
			Algorithms: o.Algorithms, ClockSkew: o.ClockSkew, UsernameClaims: o.UsernameClaims,
			UsernamePrefix: o.UsernamePrefix, GroupsPrefix: o.GroupsPrefix, HTTPClient: issuerClient,
			MinRefreshInterval: o.JWKSMinRefresh, Metrics: token.NewMetrics(reg, "guard"), Logger: log.With("component", "token"),
		})
		if err != nil {
			return err
		}
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := verifier.Warm(wctx); err != nil {
				log.Warn("issuer discovery at startup failed; tokens will be verified once the issuer answers", "err", err)
			}
		}()
	}
	hcfg := Config{Authorizer: authorizer, Metrics: metrics, Logger: log}
	if verifier != nil {
		hcfg.Verifier = verifier
	}
	handler, err := NewHandler(hcfg)
	if err != nil {
		return err
	}

	hs := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.Listen, err)
	}
	servers := []*http.Server{hs}
	errc := make(chan error, 2)
	go func() { errc <- hs.ServeTLS(ln, "", "") }()
	healthAddr := ""
	if o.HealthListen != "" {
		hln, err := net.Listen("tcp", o.HealthListen)
		if err != nil {
			hs.Close()
			return fmt.Errorf("listen on %s: %w", o.HealthListen, err)
		}
		healthAddr = hln.Addr().String()
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		health := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, health)
		go func() { errc <- health.Serve(hln) }()
	}
	cert := client.Certificate()
	log.Info("guard listening", "addr", ln.Addr().String(), "health", healthAddr, "relay", o.RelayURL,
		"cluster_cert", cert.Leaf.Subject.String(), "cluster_cert_not_after", cert.Leaf.NotAfter,
		"authn", verifier != nil, "issuers", issuers(verifier), "failure_mode", o.RelayFailureMode,
		"allowed_ttl", o.AllowedTTL, "denied_ttl", o.DeniedTTL)
	if ready != nil {
		ready(ln.Addr().String(), healthAddr)
	}
	select {
	case err := <-errc:
		for _, s := range servers {
			s.Close()
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("guard shutting down: draining reviews", "timeout", o.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	var errs []error
	for _, s := range servers {
		if err := s.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
			s.Close()
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	log.Info("guard stopped")
	return errors.Join(errs...)
}

func issuers(v *token.Verifier) string {
	if v == nil {
		return ""
	}
	return strings.Join(v.Issuers(), " ")
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// issuerHTTPClient trusts the system roots plus caFile.
func issuerHTTPClient(caFile string) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--issuer-ca-file: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--issuer-ca-file %s holds no PEM certificate", caFile)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}
