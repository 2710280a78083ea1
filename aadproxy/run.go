package aadproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/aadproxy/graph"
	"github.com/clusterconnect/clusterconnect/aadproxy/token"
	"github.com/clusterconnect/clusterconnect/pkg/serve"
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
	issuerClient, err := httpClient(o.Token.IssuerCAFile)
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
			IssuerURL:    o.Token.IssuerURL,
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
	tc := o.Token.Config()
	tc.Groups, tc.HTTPClient = groups, issuerClient
	tc.Metrics, tc.Logger = token.NewMetrics(reg, "aadproxy"), log.With("component", "token")
	verifier, err := token.NewVerifier(tc)
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
	return serve.Run(ctx, serve.Config{
		Server: hs, Listen: o.Listen, HealthListen: o.HealthListen, Registry: reg,
		ShutdownTimeout: o.ShutdownTimeout, Name: "kube-aad-proxy", Logger: log,
	}, func(addr, healthAddr string) {
		log.Info("kube-aad-proxy listening", "addr", addr, "health", healthAddr, "apiserver", upstream.Host,
			"issuers", strings.Join(verifier.Issuers(), " "), "audiences", strings.Join(o.Token.Audiences, ","), "overage", groups != nil)
		if ready != nil {
			ready(addr, healthAddr)
		}
	})
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
