// Package keypair serves a TLS certificate and key from files and picks up
// new contents when the files change, so that a rotated certificate (a
// renewed cluster identity Secret, a re-issued serving certificate) is used
// without a restart.
//
// Kubernetes updates a mounted Secret by swapping a symlink, so that both
// files change at once; a reader can still see a new certificate with the
// old key for a moment. A pair that does not load is therefore not an
// error while an earlier pair is held: the earlier pair is kept and the
// next check tries again.
package keypair

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// DefaultCheckInterval is how often the files are read at most.
const DefaultCheckInterval = time.Second

// Reloader holds the current pair. It is safe for concurrent use.
type Reloader struct {
	certFile, keyFile string
	interval          time.Duration
	log               *slog.Logger
	now               func() time.Time

	mu             sync.Mutex
	cert           *tls.Certificate
	certPEM, keyPM []byte
	checked        time.Time
	generation     uint64
}

// Options configure [New]; nil means defaults.
type Options struct {
	// CheckInterval is how often the files are read at most; zero means
	// DefaultCheckInterval, negative means on every use.
	CheckInterval time.Duration
	// Logger receives reloads and failures; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// New loads the pair; an error means it does not load now.
func New(certFile, keyFile string, opts *Options) (*Reloader, error) {
	if opts == nil {
		opts = &Options{}
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, interval: opts.CheckInterval, log: opts.Logger, now: opts.Now}
	if r.interval == 0 {
		r.interval = DefaultCheckInterval
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	c, certPEM, keyPEM, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.certPEM, r.keyPM, r.checked = c, certPEM, keyPEM, r.now()
	return r, nil
}

func (r *Reloader) load() (*tls.Certificate, []byte, []byte, error) {
	certPEM, err := os.ReadFile(r.certFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(r.keyFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("key: %w", err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("key pair %s, %s: %w", r.certFile, r.keyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, nil, nil, fmt.Errorf("certificate %s: %w", r.certFile, err)
		}
	}
	return &c, certPEM, keyPEM, nil
}

// Current returns the current pair, reloading it first if the files
// changed, and a generation number that grows with every reload (callers
// drop connections made with an older pair).
func (r *Reloader) Current() (*tls.Certificate, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if r.interval > 0 && now.Sub(r.checked) < r.interval {
		return r.cert, r.generation
	}
	r.checked = now
	certPEM, err1 := os.ReadFile(r.certFile)
	keyPEM, err2 := os.ReadFile(r.keyFile)
	if err1 != nil || err2 != nil {
		r.log.Warn("key pair files unreadable; keeping the loaded pair", "cert", r.certFile, "key", r.keyFile, "err", fmt.Sprint(err1, " ", err2))
		return r.cert, r.generation
	}
	if bytes.Equal(certPEM, r.certPEM) && bytes.Equal(keyPEM, r.keyPM) {
		return r.cert, r.generation
	}
	c, certPEM, keyPEM, err := r.load()
	if err != nil {
		r.log.Warn("changed key pair does not load (yet); keeping the loaded pair", "err", err)
		return r.cert, r.generation
	}
	r.cert, r.certPEM, r.keyPM = c, certPEM, keyPEM
	r.generation++
	r.log.Info("key pair reloaded", "cert", r.certFile, "subject", c.Leaf.Subject.String(), "not_after", c.Leaf.NotAfter)
	return r.cert, r.generation
}

// GetCertificate is for tls.Config.GetCertificate (serving).
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, _ := r.Current()
	return c, nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate (mTLS).
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c, _ := r.Current()
	return c, nil
}
