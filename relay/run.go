package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterconnect/clusterconnect/pkg/keypair"
	"github.com/clusterconnect/clusterconnect/pkg/serve"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay/certs"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/secret"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// Run serves the relay with validated options until ctx is done, then drains
// for at most o.ShutdownTimeout. ready, if not nil, is called with the bound
// address once the listener accepts connections.
func Run(ctx context.Context, o *Options, log *slog.Logger, ready func(addr string)) error {
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	certFile, keyFile, caFile := o.TLSCertFile, o.TLSKeyFile, o.CAFile
	if certFile == "" {
		f, err := certs.EnsureDev(o.DataDir, o.Hostnames)
		if err != nil {
			return err
		}
		certFile, keyFile, caFile = f.CertFile, f.KeyFile, f.CAFile
		log.Info("using the development CA; agents and kubectl trust it via the issued kubeconfig", "ca", caFile)
	}
	var caPEM []byte
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("CA bundle: %w", err)
		}
		caPEM = b
	}
	// The serving certificate is read again when its files change (a
	// renewed Secret), without a restart.
	pair, err := keypair.New(certFile, keyFile, &keypair.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	token, err := adminToken(o)
	if err != nil {
		return err
	}
	st, err := store.OpenBolt(filepath.Join(o.DataDir, "relay.db"))
	if err != nil {
		return err
	}
	defer st.Close()

	ca, err := loadClusterCA(ctx, o, st)
	if err != nil {
		return err
	}
	srv, err := New(Config{
		Store:                st,
		ExternalURL:          o.ExternalURL,
		CAPEM:                caPEM,
		AdminToken:           token,
		ClusterCA:            ca,
		CertLifetime:         o.CertLifetime,
		RegistrationTokenTTL: o.RegistrationTokenTTL,
		Location:             o.Location,
		OfflineAfter:         o.OfflineAfter,
		Tunnel: &tunnel.Config{
			StreamWindow:      uint32(o.StreamWindow),
			MaxStreams:        o.MaxStreams,
			KeepAliveInterval: o.KeepAliveInterval,
			KeepAliveTimeout:  o.KeepAliveTimeout,
		},
		Registry: prometheus.NewRegistry(), // relay.New adds the Go and process collectors
		Logger:   log,
	})
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler: srv,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS13,
			GetCertificate: pair.GetCertificate,
			NextProtos:     []string{"h2", "http/1.1"},
			// Agents present their cluster certificate; kubectl presents
			// none. The relay verifies it per request, so an expired or
			// foreign certificate gets an answer that says what to do
			// rather than a TLS alert.
			ClientAuth: tls.RequestClientCert,
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          1000,
			MaxReceiveBufferPerStream:     4 << 20,
			MaxReceiveBufferPerConnection: 16 << 20,
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return serve.Run(ctx, serve.Config{
		Server:          hs,
		Listen:          o.Listen,
		ShutdownTimeout: o.ShutdownTimeout,
		// Tunnels are hijacked connections the HTTP server no longer
		// tracks: the relay drains them itself, at the same time.
		OnShutdown: func(ctx context.Context) error {
			if err := srv.Shutdown(ctx); err != nil {
				log.Warn("tunnel drain incomplete", "err", err)
			}
			return nil
		},
		Name:   "relay",
		Logger: log,
	}, func(addr, _ string) {
		log.Info("relay listening", "addr", addr, "external_url", o.ExternalURL, "data_dir", o.DataDir)
		if ready != nil {
			ready(addr)
		}
	})
}

// adminToken reads the management API token, creating it on first start.
func adminToken(o *Options) (string, error) {
	path := o.AdminTokenFile
	generate := path == ""
	if generate {
		path = filepath.Join(o.DataDir, "admin-token")
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && generate {
		t := secret.Random(32)
		if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("write admin token: %w", err)
		}
		return t, nil
	}
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("admin token file %s is empty", path)
	}
	return t, nil
}

// loadClusterCA loads the cluster CA from files, or from the store, creating
// it there on first start.
func loadClusterCA(ctx context.Context, o *Options, st store.Store) (*clusterca.CA, error) {
	if o.ClusterCACertFile != "" {
		c, err := os.ReadFile(o.ClusterCACertFile)
		if err != nil {
			return nil, fmt.Errorf("cluster CA: %w", err)
		}
		k, err := os.ReadFile(o.ClusterCAKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster CA: %w", err)
		}
		return clusterca.Load(c, k)
	}
	c, k, err := clusterca.Generate()
	if err != nil {
		return nil, err
	}
	stored, err := st.InitCA(ctx, &store.CA{CertPEM: c, KeyPEM: k})
	if err != nil {
		return nil, fmt.Errorf("cluster CA in the store: %w", err)
	}
	return clusterca.Load(stored.CertPEM, stored.KeyPEM)
}
