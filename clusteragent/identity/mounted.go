package identity

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/clusterconnect/clusterconnect/clusteragent/identity/wire"
)

// DefaultMountPollInterval is how often a mounted identity's files are read
// for a change when MountedConfig.PollInterval is zero. The kubelet updates
// a mounted Secret within about a minute of the Secret changing; the
// identity role renews at two thirds of the lifetime, so a few seconds more
// cost nothing.
const DefaultMountPollInterval = 10 * time.Second

// MountedConfig wires a mounted Identity: the identity Secret as the other
// roles (connect, sync, guard) see it, mounted as files in Dir by the
// kubelet. Only the identity role enrols, renews and writes the Secret; a
// mounted Identity reads it and follows its changes, so the other roles
// need no access to Secrets at all.
type MountedConfig struct {
	// Dir holds tls.crt, tls.key and ca.crt (the Secret's keys). Required.
	Dir string
	// Cluster is this cluster's registered name: the certificate must be
	// issued to it. Required.
	Cluster string
	// RelayCAFile: as Config.RelayCAFile.
	RelayCAFile string
	// PollInterval: see DefaultMountPollInterval.
	PollInterval time.Duration
	Logger       *slog.Logger
}

// NewMounted returns an Identity backed by files; call WaitMounted, then
// FollowMounted. Ensure and Run are the identity role's and must not be
// called on it.
func NewMounted(cfg MountedConfig) (*Identity, error) {
	var errs []error
	if cfg.Dir == "" {
		errs = append(errs, errors.New("the directory of the mounted identity Secret is required"))
	}
	if cfg.Cluster == "" {
		errs = append(errs, errors.New("the cluster name is required"))
	}
	extra, err := readCABundle(cfg.RelayCAFile)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultMountPollInterval
	}
	return &Identity{
		cfg:     Config{Cluster: cfg.Cluster, RelayCAFile: cfg.RelayCAFile},
		mounted: &cfg,
		extraCA: extra,
		log:     log.With("cluster", cfg.Cluster, "identity_dir", cfg.Dir),
		now:     time.Now,
		rotated: make(chan struct{}, 1),
	}, nil
}

// loadMounted reads the files and makes them current if they changed. It
// reports whether the certificate changed.
func (id *Identity) loadMounted() (bool, error) {
	dir := id.mounted.Dir
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s is not there yet: the identity role writes the Secret once it has enrolled (see its log)", filepath.Join(dir, name))
		}
		return b, err
	}
	certPEM, err := read(keyCert)
	if err != nil {
		return false, err
	}
	keyPEM, err := read(keyKey)
	if err != nil {
		return false, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, keyCA))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if st := id.cur.Load(); st != nil && bytes.Equal(st.cert.Certificate[0], firstDER(certPEM)) && bytes.Equal(st.caPEM, caPEM) {
		return false, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The kubelet swaps the files at once (one symlink), so a mismatch
		// is a broken Secret, not a half-written one.
		return false, fmt.Errorf("%s and %s in %s: %w", keyCert, keyKey, dir, err)
	}
	if pair.Leaf.Subject.CommonName != id.cfg.Cluster {
		return false, fmt.Errorf("%s in %s is the certificate of cluster %q, not %q", keyCert, dir, pair.Leaf.Subject.CommonName, id.cfg.Cluster)
	}
	if len(caPEM) > 0 {
		if _, err := wire.ParseCertificates(caPEM); err != nil {
			return false, fmt.Errorf("%s in %s: %w", keyCA, dir, err)
		}
	}
	id.swap(id.newState(&pair, caPEM))
	return true, nil
}

// firstDER is the DER of the first PEM block, nil if there is none.
func firstDER(certPEM []byte) []byte {
	certs, err := wire.ParseCertificates(certPEM)
	if err != nil || len(certs) == 0 {
		return nil
	}
	return certs[0].Raw
}

// WaitMounted waits until the mounted files hold a valid identity for the
// cluster, logging once per change of error.
func (id *Identity) WaitMounted(ctx context.Context) error {
	var last string
	for {
		_, err := id.loadMounted()
		if err == nil {
			id.log.Info("cluster identity ready (mounted)", "not_after", id.NotAfter())
			return nil
		}
		if msg := err.Error(); msg != last {
			id.log.Warn("cluster identity not available yet; waiting", "err", err)
			last = msg
		}
		if !sleep(ctx, id.mounted.PollInterval/5) {
			return fmt.Errorf("cluster identity: %w", err)
		}
	}
}

// FollowMounted reads the files every PollInterval until ctx is done; a new
// certificate becomes current and signals Rotated.
func (id *Identity) FollowMounted(ctx context.Context) {
	var last string
	for sleep(ctx, id.mounted.PollInterval) {
		changed, err := id.loadMounted()
		switch {
		case err != nil:
			if msg := err.Error(); msg != last {
				id.log.Error("mounted identity unreadable; keeping the current certificate", "err", err)
				last = msg
			}
		case changed:
			last = ""
			id.log.Info("mounted identity changed", "not_after", id.NotAfter())
		}
	}
}
