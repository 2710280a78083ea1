package relay

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/pkg/keypair"
	"github.com/clusterconnect/clusterconnect/pkg/serve"
	"github.com/clusterconnect/clusterconnect/pkg/trust"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay/audit"
	"github.com/clusterconnect/clusterconnect/relay/authn"
	"github.com/clusterconnect/clusterconnect/relay/certs"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/dataplane"
	"github.com/clusterconnect/clusterconnect/relay/fleet"
	"github.com/clusterconnect/clusterconnect/relay/kek"
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
		hosts := o.Hostnames
		if sfx := o.HostSuffix(); sfx != "" {
			hosts = append(slices.Clone(hosts), "*."+sfx)
		}
		f, err := certs.EnsureDev(o.DataDir, hosts)
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
	st, err := openStore(ctx, o, log)
	if err != nil {
		return err
	}
	defer st.Close()

	ca, err := loadClusterCA(ctx, o, st, log)
	if err != nil {
		return err
	}
	var verifier authn.Verifier
	if len(o.Entra.Tenants) > 0 {
		v, err := o.Entra.Start(ctx, &entra.StartConfig{Logger: log})
		if err != nil {
			return fmt.Errorf("Entra sign-in: %w", err)
		}
		verifier = v
		log.Info("Entra sign-in on", "tenants", o.Entra.Tenants, "audiences", o.Entra.Audiences)
	}
	auditOut, err := openAudit(o.AuditLog)
	if err != nil {
		return err
	}
	if auditOut != nil {
		defer auditOut.Close()
	}
	auditLog := audit.New(audit.Config{Writer: auditOut, Logger: log})
	suffix := o.HostSuffix()
	if suffix != "" && o.TLSCertFile != "" && !certCovers(pair, "x."+suffix) {
		log.Warn("the serving certificate does not cover *."+suffix+": kubeconfigs name clusters by path (/clusters/<name>); add the wildcard name to the certificate, or set --cluster-host-suffix", "suffix", suffix)
		suffix = ""
	}
	var fl *fleet.Fleet
	var id string
	if es, ok := st.(*store.Etcd); ok {
		roots := trust.SystemPool()
		roots.AppendCertsFromPEM(caPEM)
		id = o.ReplicaID
		if id == "" {
			id = replicaID()
		}
		if fl, err = fleet.Start(ctx, fleet.Config{Client: es.Client(), Prefix: es.Prefix(), ReplicaID: id, PeerURL: o.PeerURL,
			CA: ca, RootCAs: roots, ServerName: externalHost(o.ExternalURL), Logger: log}); err != nil {
			return err
		}
		defer fl.Stop()
		log.Info("fleet replica", "replica", id, "peer_url", o.PeerURL)
	}
	var planeFleet dataplane.Fleet
	if fl != nil {
		planeFleet = fl
	}
	srv, err := New(Config{
		Fleet:                  planeFleet,
		Replica:                id,
		Store:                  st,
		ExternalURL:            o.ExternalURL,
		CAPEM:                  caPEM,
		AdminToken:             token,
		Entra:                  verifier,
		HostSuffix:             suffix,
		ClientCertLifetime:     o.ClientCertLifetime,
		Limits:                 &o.Limits,
		Audit:                  auditLog,
		ClusterCA:              ca,
		CertLifetime:           o.CertLifetime,
		RegistrationTokenTTL:   o.RegistrationTokenTTL,
		Location:               o.Location,
		OfflineAfter:           o.OfflineAfter,
		HeartbeatWriteInterval: o.HeartbeatWriteInterval,
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
		HealthListen:    o.HealthListen,
		Health:          srv.Health(),
		ShutdownTimeout: o.ShutdownTimeout,
		// Tunnels are hijacked connections the HTTP server no longer
		// tracks: the relay drains them itself, at the same time.
		OnShutdown: func(ctx context.Context) error {
			if err := srv.Shutdown(ctx); err != nil {
				log.Warn("tunnel drain incomplete", "err", err)
			}
			// The audit lines still queued are written before the file closes.
			if err := auditLog.Flush(ctx); err != nil {
				log.Warn("audit log not flushed", "err", err)
			}
			return nil
		},
		Name:   "relay",
		Logger: log,
	}, func(addr, health string) {
		log.Info("relay listening", "addr", addr, "health", health, "external_url", o.ExternalURL, "data_dir", o.DataDir, "cluster_host_suffix", suffix)
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
		// Written whole or not at all, owner-only: a crash never leaves a
		// truncated token, and no other user can read it.
		if err := secret.WriteFileAtomic(path, []byte(t+"\n"), 0o600); err != nil {
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
// it there on first start. In the store its private key is sealed with the
// key-encryption key (--kek-file, $RELAY_KEK, or <data-dir>/kek).
func loadClusterCA(ctx context.Context, o *Options, st store.Store, log *slog.Logger) (*clusterca.CA, error) {
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
	key, err := loadKEK(o, log)
	if err != nil {
		return nil, err
	}
	c, k, err := clusterca.Generate()
	if err != nil {
		return nil, err
	}
	sealed, err := key.Seal(k)
	if err != nil {
		return nil, err
	}
	stored, err := st.InitCA(ctx, &store.CA{CertPEM: c, KeyPEM: sealed})
	if err != nil {
		return nil, fmt.Errorf("cluster CA in the store: %w", err)
	}
	keyPEM := stored.KeyPEM
	if kek.IsSealed(keyPEM) {
		if keyPEM, err = key.Open(keyPEM); err != nil {
			return nil, fmt.Errorf("cluster CA key in the store: %w", err)
		}
	} else {
		log.Warn("the cluster CA key in the store is not encrypted (written by an older relay); it stays readable by whoever reads the store file until the CA is rotated")
	}
	return clusterca.Load(stored.CertPEM, keyPEM)
}

// loadKEK reads the key-encryption key: --kek-file, else $RELAY_KEK, else
// <data-dir>/kek, generated on first start (a development default: keep the
// key apart from the store in production).
func loadKEK(o *Options, log *slog.Logger) (*kek.Key, error) {
	if o.KEKFile != "" {
		return kek.Load(o.KEKFile, "")
	}
	if os.Getenv("RELAY_KEK") != "" {
		return kek.Load("", "RELAY_KEK")
	}
	path := filepath.Join(o.DataDir, "kek")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := kek.Generate(path); err != nil {
			return nil, fmt.Errorf("generate the key-encryption key: %w", err)
		}
		log.Warn("generated a key-encryption key beside the store; in production pass --kek-file (or $RELAY_KEK) from a separate secret", "path", path)
	}
	return kek.Load(path, "")
}

// openAudit opens the audit log destination: nil for none.
func openAudit(path string) (io.WriteCloser, error) {
	if path == "" {
		return nil, nil
	}
	w, err := audit.OpenFile(path)
	if err != nil {
		return nil, fmt.Errorf("--audit-log: %w", err)
	}
	return w, nil
}

// certCovers reports whether the serving certificate is valid for host.
func certCovers(pair *keypair.Reloader, host string) bool {
	c, err := pair.GetCertificate(&tls.ClientHelloInfo{ServerName: host})
	if err != nil || c == nil || c.Leaf == nil {
		return false
	}
	return c.Leaf.VerifyHostname(host) == nil
}

// openStore opens the store --store names.
func openStore(ctx context.Context, o *Options, log *slog.Logger) (store.Store, error) {
	if o.Store != "etcd" {
		return store.OpenBolt(filepath.Join(o.DataDir, "relay.db"))
	}
	cfg := o.Etcd
	cfg.Logger = log
	st, err := store.OpenEtcd(ctx, cfg)
	if err != nil {
		return nil, err
	}
	log.Info("store: etcd", "endpoints", cfg.Endpoints, "prefix", st.Prefix())
	return st, nil
}

// replicaID is the host name with a random suffix (a restarted replica is
// a new one: its predecessor's records expire with its lease).
func replicaID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "relay"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%x", h, b)
}

func externalHost(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return pu.Hostname()
}
