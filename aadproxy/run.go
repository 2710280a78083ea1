package aadproxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/aadproxy/graph"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/pkg/keypair"
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
	serving, err := keypair.New(o.TLSCertFile, o.TLSKeyFile, &keypair.Options{Logger: log.With("component", "serving-cert")})
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	issuerClient, err := o.Token.IssuerHTTPClient()
	if err != nil {
		return err
	}
	reg := serve.NewRegistry()
	var groups entra.GroupResolver
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
	verifier, err := o.Token.Start(ctx, &entra.StartConfig{
		HTTPClient: issuerClient, Groups: groups,
		Metrics: entra.NewMetrics(reg, "aadproxy"), Logger: log.With("component", "token"),
	})
	if err != nil {
		return err
	}
	proxy, err := New(Config{Verifier: verifier, Upstream: upstream, Registry: reg, Logger: log})
	if err != nil {
		return err
	}

	hs := &http.Server{
		Handler: proxy,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: serving.GetCertificate,
			NextProtos:     []string{"h2", "http/1.1"},
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
