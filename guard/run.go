package guard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterconnect/clusterconnect/guard/authz"
	"github.com/clusterconnect/clusterconnect/guard/cache"
	"github.com/clusterconnect/clusterconnect/guard/checkaccess"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/pkg/keypair"
	"github.com/clusterconnect/clusterconnect/pkg/serve"
)

// Run serves guard with validated options until ctx is done, then drains
// for at most o.ShutdownTimeout. ready, if not nil, is called with the
// bound webhook address (and the health address, or "") once both
// listeners accept connections.
func Run(ctx context.Context, o *Options, log *slog.Logger, ready func(addr, healthAddr string)) error {
	reg := serve.NewRegistry()
	metrics := NewMetrics(reg)

	serving, err := keypair.New(o.TLSCertFile, o.TLSKeyFile, &keypair.Options{Logger: log.With("component", "serving-cert")})
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: serving.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
	switch {
	case o.WebhookClientCAFile != "":
		pool, err := loadPool(o.WebhookClientCAFile)
		if err != nil {
			return fmt.Errorf("--webhook-client-ca-file: %w", err)
		}
		tlsCfg.ClientCAs, tlsCfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	case o.AllowAnonymousWebhookClients:
		log.Warn("the webhooks accept clients without a certificate (--allow-anonymous-webhook-clients): anyone who reaches " + o.Listen +
			" can test tokens and make guard ask the relay about any user; give the apiserver's client CA with --webhook-client-ca-file")
	default:
		return errors.New("--webhook-client-ca-file is required (or --allow-anonymous-webhook-clients)")
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
		GroupsPrefix: o.Token.GroupsPrefix, FailureMode: FailureMode(o.RelayFailureMode), RelayBackoff: o.RelayBackoff,
		Metrics: metrics, Logger: log.With("component", "authz"),
	})
	if err != nil {
		return err
	}
	hcfg := Config{Authorizer: authorizer, Metrics: metrics, Logger: log}
	var verifier *entra.Verifier
	if !o.DisableAuthn {
		verifier, err = o.Token.Start(ctx, &entra.StartConfig{Metrics: entra.NewMetrics(reg, "guard"), Logger: log.With("component", "token")})
		if err != nil {
			return err
		}
		hcfg.Verifier = verifier
	}
	handler, err := NewHandler(hcfg)
	if err != nil {
		return err
	}

	hs := &http.Server{
		Handler:           handler, // reviews' bodies are bounded by its BodyTimeout
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	cert := client.Certificate()
	return serve.Run(ctx, serve.Config{
		Server: hs, Listen: o.Listen, HealthListen: o.HealthListen, Registry: reg,
		ShutdownTimeout: o.ShutdownTimeout, Name: "guard", Logger: log,
	}, func(addr, healthAddr string) {
		log.Info("guard listening", "addr", addr, "health", healthAddr, "relay", o.RelayURL,
			"cluster_cert", cert.Leaf.Subject.String(), "cluster_cert_not_after", cert.Leaf.NotAfter,
			"authn", verifier != nil, "issuers", issuers(verifier), "failure_mode", o.RelayFailureMode,
			"allowed_ttl", o.AllowedTTL, "denied_ttl", o.DeniedTTL)
		if ready != nil {
			ready(addr, healthAddr)
		}
	})
}

func issuers(v *entra.Verifier) string {
	if v == nil {
		return ""
	}
	return strings.Join(v.Issuers(), " ")
}

// loadPool is the apiserver's client CA alone, without the system roots
// (trust.Pool adds them): no publicly trusted certificate may call the
// webhooks.
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
