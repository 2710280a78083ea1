package aadproxy

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
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/aadproxy/graph"
	"github.com/clusterconnect/clusterconnect/aadproxy/token"
)

// Run serves kube-aad-proxy with validated options until ctx is done, then
// drains for at most o.ShutdownTimeout. ready, if not nil, is called with
// the bound HTTPS address (and the health address, or "") once both
// listeners accept connections.
func Run(ctx context.Context, o *Options, log *slog.Logger, ready func(addr, healthAddr string)) error {
	upstream, err := upstreamConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	pair, err := tls.LoadX509KeyPair(o.TLSCertFile, o.TLSKeyFile)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	issuerClient, err := httpClient(o.IssuerCAFile)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var groups token.GroupResolver
	if o.ClientID != "" {
		secret, err := os.ReadFile(o.ClientSecretFile)
		if err != nil {
			return fmt.Errorf("--client-secret-file: %w", err)
		}
		r, err := graph.New(&graph.Config{
			GraphURL:     o.GraphURL,
			IssuerURL:    o.IssuerURL,
			ClientID:     o.ClientID,
			ClientSecret: strings.TrimSpace(string(secret)),
			CacheTTL:     o.GroupsCacheTTL,
			HTTPClient:   issuerClient,
			Logger:       log.With("component", "graph"),
		})
		if err != nil {
			return err
		}
		groups = r
	}
	verifier, err := token.NewVerifier(&token.Config{
		IssuerURL:          o.IssuerURL,
		V1IssuerURL:        o.V1IssuerURL,
		Tenants:            o.Tenants,
		Audiences:          o.Audiences,
		Algorithms:         o.Algorithms,
		ClockSkew:          o.ClockSkew,
		UsernameClaims:     o.UsernameClaims,
		UsernamePrefix:     o.UsernamePrefix,
		GroupsPrefix:       o.GroupsPrefix,
		Groups:             groups,
		HTTPClient:         issuerClient,
		MinRefreshInterval: o.JWKSMinRefresh,
		Metrics:            token.NewMetrics(reg, "aadproxy"),
		Logger:             log.With("component", "token"),
	})
	if err != nil {
		return err
	}
	proxy, err := New(Config{Verifier: verifier, Upstream: upstream, Registry: reg, Logger: log})
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

	hs := &http.Server{
		Handler: proxy,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{pair},
			NextProtos:   []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 10 * time.Second,
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
	log.Info("kube-aad-proxy listening", "addr", ln.Addr().String(), "health", healthAddr, "apiserver", upstream.Host,
		"issuers", strings.Join(verifier.Issuers(), " "), "audiences", strings.Join(o.Audiences, ","), "overage", groups != nil)
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
	log.Info("kube-aad-proxy shutting down: draining requests", "timeout", o.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	var errs []error
	for _, s := range servers {
		// Hijacked connections (exec, port-forward) are not tracked by
		// Shutdown; Close ends what is left after the drain.
		if err := s.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
			s.Close()
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	log.Info("kube-aad-proxy stopped")
	return errors.Join(errs...)
}

// upstreamConfig loads the proxy's own apiserver credentials.
func upstreamConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster apiserver config (outside a cluster pass --kubeconfig): %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	return c, nil
}

// httpClient trusts the system roots plus caFile.
func httpClient(caFile string) (*http.Client, error) {
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
