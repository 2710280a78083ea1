package identity

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"time"

	"github.com/clusterconnect/clusterconnect/clusteragent/identity/wire"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

// retryBackoff spaces failed renewals (full jitter).
var retryBackoff = tunnel.Backoff{Min: time.Second, Max: time.Minute}

// errWaitingForToken is a quiet failure: the certificate expired and there
// is no registration token yet (the expiry was logged with what to do).
var errWaitingForToken = errors.New("waiting for a registration token")

// Run keeps the certificate fresh until ctx is done; call it after a
// successful Ensure. At RenewAt of the lifetime it renews over mTLS with a
// new key, stores the Secret, makes the new certificate current and signals
// Rotated. Failures are retried with exponential backoff and full jitter
// (1 s doubling to 1 min, never past the expiry) and logged once per change
// of error. If the certificate expires anyway, Run logs the *ExpiredError
// once and then re-registers as soon as the registration token file holds a
// new token.
func (id *Identity) Run(ctx context.Context) {
	if id.cur.Load() == nil {
		id.log.Error("identity: Run needs a certificate: call Ensure first")
		return
	}
	var (
		failures       int
		lastErr        string
		expiryLogged   *state
		scheduleLogged *state
	)
	for {
		st := id.cur.Load()
		now := id.now()
		var due time.Time
		switch {
		case failures > 0:
			due = now.Add(retryBackoff.Delay(failures - 1))
			if now.Before(st.notAfter()) && due.After(st.notAfter()) {
				due = st.notAfter()
			}
		case !st.stored.Load() || !now.Before(st.notAfter()):
			due = now
		default:
			due = id.renewTime(st)
			if scheduleLogged != st {
				id.log.Info("certificate renewal scheduled", "at", due.UTC().Format(time.RFC3339), "notAfter", st.notAfter().UTC().Format(time.RFC3339))
				scheduleLogged = st
			}
		}
		if !sleep(ctx, due.Sub(now)) {
			return
		}

		var err error
		switch {
		case !id.now().Before(st.notAfter()):
			if expiryLogged != st {
				id.log.Error((&ExpiredError{Cluster: id.cfg.Cluster, NotAfter: st.notAfter(), TokenFile: id.cfg.RegistrationTokenFile}).Error())
				expiryLogged = st
			}
			// The token the identity was enrolled with is spent: wait for
			// another.
			var token string
			if token, err = id.readToken(); err != nil || tokenHash(token) == id.getTokenHash() {
				err = errWaitingForToken
			} else {
				err = id.enrol(ctx, token, st.caPEM)
			}
		case !st.stored.Load():
			err = id.store(ctx, st)
		default:
			err = id.renew(ctx, st)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			if msg := err.Error(); msg != lastErr && err != errWaitingForToken {
				id.log.Warn("identity: will retry", "err", err)
				lastErr = msg
			}
			continue
		}
		if lastErr != "" {
			id.log.Info("identity: recovered")
		}
		failures, lastErr = 0, ""
	}
}

// renewTime is NotBefore + RenewAt·lifetime.
func (id *Identity) renewTime(st *state) time.Time {
	life := st.notAfter().Sub(st.notBefore())
	return st.notBefore().Add(time.Duration(float64(life) * id.renewAt))
}

// renew trades the certificate of st for a new one over mTLS, stores it and
// makes it current. If only the store fails, the new certificate is current
// anyway and the error says so; Run then retries the store.
func (id *Identity) renew(ctx context.Context, st *state) error {
	key, csr, err := newKeyAndCSR(id.cfg.Cluster)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    st.roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return st.cert, nil
		},
	}
	is, err := id.call(ctx, tlsCfg, api.RenewPath, api.RenewRequest{CSR: csr})
	if err != nil {
		return fmt.Errorf("identity: renew the certificate of cluster %s with relay %s: %w", id.cfg.Cluster, id.base, err)
	}
	cert, err := certificate(is, key, id.now())
	if err != nil {
		return fmt.Errorf("identity: renew the certificate of cluster %s: %w", id.cfg.Cluster, err)
	}
	next := id.newState(cert, wire.EncodeCertificates(is.CABundle...))
	serr := id.store(ctx, next)
	id.swap(next)
	id.log.Info("renewed the certificate", "notAfter", next.notAfter().UTC().Format(time.RFC3339))
	if serr != nil {
		return fmt.Errorf("renewed, but not stored yet: %w", serr)
	}
	return nil
}

// sleep waits d or until ctx is done; it reports whether to go on.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
