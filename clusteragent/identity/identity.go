package identity

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/trust"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/clusterconnect/clusterconnect/clusteragent/identity/wire"
)

// DefaultSecretName is the Secret that holds the identity when
// Config.SecretName is empty.
const DefaultSecretName = "clusterconnect-identity"

// DefaultRenewAt is the fraction of a certificate's lifetime after which it
// is renewed when Config.RenewAt is zero.
const DefaultRenewAt = 2.0 / 3

// Config wires an Identity.
type Config struct {
	// RelayURL is the relay's base URL, e.g. https://relay.example:8443.
	RelayURL string
	// Cluster is this cluster's registered name.
	Cluster string
	// RegistrationTokenFile holds the one-time token from `connectctl
	// clusters create` or `connectctl clusters token`. It is used when the
	// agent must enrol (first start, stored identity expired or unusable) and
	// when it holds another token than the stored identity was enrolled with
	// (re-registration). Empty means there is no token.
	RegistrationTokenFile string
	// RelayCAFile is a CA bundle to trust for the relay, besides the system
	// roots and the bundle the relay hands out at enrolment. Empty: none.
	RelayCAFile string
	// Client reads and writes the Secret. Required.
	Client kubernetes.Interface
	// Namespace holds the Secret. Required.
	Namespace string
	// SecretName is the Secret's name; empty means DefaultSecretName.
	SecretName string
	// RenewAt is the fraction of the lifetime (0 < RenewAt < 1) after which
	// the certificate is renewed; zero means DefaultRenewAt.
	RenewAt float64
	// Logger receives the lifecycle events; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Waits still use real timers.
	Now func() time.Time
}

// ErrNoRegistrationToken is wrapped by the error Ensure returns when it must
// enrol and there is no registration token to enrol with.
var ErrNoRegistrationToken = errors.New("no registration token")

// ExpiredError is the stored certificate having expired with no token to
// re-register with. Its message says what the operator must do.
type ExpiredError struct {
	Cluster   string
	NotAfter  time.Time
	TokenFile string // Config.RegistrationTokenFile
}

func (e *ExpiredError) Error() string {
	file := e.TokenFile
	if file == "" {
		file = "the registration token file"
	}
	return fmt.Sprintf("certificate of cluster %s expired on %s: re-register the cluster: run `connectctl clusters token %s`, put the token in %s, and restart the agent",
		e.Cluster, e.NotAfter.UTC().Format(time.RFC3339), e.Cluster, file)
}

// Identity is a cluster's client certificate for the relay: loaded from or
// enrolled into a Secret by Ensure, kept fresh by Run. Its methods are safe
// for concurrent use.
type Identity struct {
	cfg        Config
	base       string // RelayURL without a trailing slash
	secretName string
	renewAt    float64
	extraCA    []byte // RelayCAFile's certificates
	secrets    typedcorev1.SecretInterface
	log        *slog.Logger
	now        func() time.Time
	rotated    chan struct{}
	// mounted is set on an Identity of NewMounted.
	mounted *MountedConfig

	cur atomic.Pointer[state]

	mu         sync.Mutex
	lastSecret *corev1.Secret // the managed Secret as last read or written
	tokenHash  string         // of the token the identity was enrolled with
}

// state is one certificate with what goes with it. Only stored changes.
type state struct {
	cert   *tls.Certificate // Leaf set
	caPEM  []byte           // the relay's CA bundle (the Secret's ca.crt)
	roots  *x509.CertPool   // system + RelayCAFile + caPEM
	stored atomic.Bool      // the Secret holds this certificate
}

func (s *state) notBefore() time.Time { return s.cert.Leaf.NotBefore }
func (s *state) notAfter() time.Time  { return s.cert.Leaf.NotAfter }

// New checks cfg and returns an Identity without a certificate; call Ensure.
func New(cfg Config) (*Identity, error) {
	var errs []error
	u, err := url.Parse(cfg.RelayURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("relay URL %q must be https://host[:port]", cfg.RelayURL))
	}
	if cfg.Cluster == "" {
		errs = append(errs, errors.New("the cluster name is required"))
	}
	if cfg.Client == nil {
		errs = append(errs, errors.New("a Kubernetes client is required"))
	}
	if cfg.Namespace == "" {
		errs = append(errs, errors.New("the namespace of the identity Secret is required"))
	}
	if cfg.RenewAt < 0 || cfg.RenewAt >= 1 {
		errs = append(errs, fmt.Errorf("RenewAt %v: want a fraction of the lifetime, 0 < RenewAt < 1 (0: %.2f)", cfg.RenewAt, DefaultRenewAt))
	}
	extra, err := readCABundle(cfg.RelayCAFile)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	id := &Identity{
		cfg:        cfg,
		base:       strings.TrimSuffix(cfg.RelayURL, "/"),
		secretName: cfg.SecretName,
		renewAt:    cfg.RenewAt,
		extraCA:    extra,
		secrets:    cfg.Client.CoreV1().Secrets(cfg.Namespace),
		log:        cfg.Logger,
		now:        cfg.Now,
		rotated:    make(chan struct{}, 1),
	}
	if id.secretName == "" {
		id.secretName = DefaultSecretName
	}
	if id.renewAt == 0 {
		id.renewAt = DefaultRenewAt
	}
	if id.log == nil {
		id.log = slog.New(slog.DiscardHandler)
	}
	id.log = id.log.With("cluster", cfg.Cluster, "secret", id.secretRef())
	if id.now == nil {
		id.now = time.Now
	}
	return id, nil
}

// Ensure gives the Identity a certificate: the one in the Secret if it is
// this cluster's and unexpired, else a new one enrolled with the
// registration token and stored in the Secret. A restart with the same
// token file does not enrol again; a different token in the file than the
// one the Secret was enrolled with re-registers (and if the relay refuses
// it, the stored certificate stays in use).
//
// An expired certificate with no token is an *ExpiredError; no token when
// one is needed wraps ErrNoRegistrationToken; the relay refusing is a
// *RelayError. If the relay issued a certificate but the Secret could not be
// written, Ensure logs it and succeeds: the token is spent, and Run stores
// the certificate later.
func (id *Identity) Ensure(ctx context.Context) error {
	s, err := id.getSecret(ctx)
	if err != nil {
		return err
	}
	var (
		why     string // why enrolment is needed
		expired *ExpiredError
		oldCA   []byte // trusted for the enrolment call too
	)
	switch {
	case s == nil:
		why = "there is no Secret " + id.secretRef()
	case !managed(s):
		return id.errForeignSecret()
	default:
		cert, ca, err := parseSecret(s, id.cfg.Cluster)
		switch {
		case err != nil:
			why = fmt.Sprintf("Secret %s is not usable: %v", id.secretRef(), err)
			id.log.Warn("the identity Secret is not usable; enrolling again if there is a registration token", "reason", err)
		case !id.now().Before(cert.Leaf.NotAfter):
			expired = &ExpiredError{Cluster: id.cfg.Cluster, NotAfter: cert.Leaf.NotAfter, TokenFile: id.cfg.RegistrationTokenFile}
			why, oldCA = expired.Error(), ca
		default:
			st := id.newState(cert, ca)
			st.stored.Store(true)
			id.setTokenHash(s.Annotations[TokenHashAnnotation])
			if id.reregister(ctx, s.Annotations[TokenHashAnnotation], ca) {
				return nil
			}
			id.cur.Store(st)
			id.log.Info("loaded the cluster identity", "notAfter", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
			return nil
		}
	}
	token, err := id.readToken()
	if err != nil {
		if expired != nil {
			return expired
		}
		return fmt.Errorf("identity: cluster %s cannot enrol: %s, and %w: run `connectctl clusters token %s` and put the token in %s",
			id.cfg.Cluster, why, err, id.cfg.Cluster, id.tokenFileName())
	}
	if expired != nil {
		id.log.Warn("the stored certificate expired; re-registering with the registration token", "notAfter", expired.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := id.enrol(ctx, token, oldCA); err != nil {
		if expired != nil {
			return fmt.Errorf("%w; re-registering with the token in %s failed: %w", expired, id.cfg.RegistrationTokenFile, err)
		}
		return err
	}
	return nil
}

// reregister enrols again if the token file holds a token other than the
// one the stored identity was enrolled with (recorded as its hash): that is
// an operator re-registering the cluster, e.g. after it was deleted and
// created again. It reports whether it did; if the relay refuses, the stored
// identity stays in use and the refusal is logged.
func (id *Identity) reregister(ctx context.Context, recorded string, ca []byte) bool {
	token, err := id.readToken()
	if err != nil || recorded == "" || tokenHash(token) == recorded {
		return false
	}
	id.log.Info("a new registration token is in place: re-registering", "file", id.cfg.RegistrationTokenFile)
	if err := id.enrol(ctx, token, ca); err != nil {
		id.log.Warn("re-registration with the new token failed; keeping the stored certificate", "err", err)
		return false
	}
	return true
}

// tokenHash identifies a registration token in the Secret without keeping
// it (it is spent by then anyway).
func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

func (id *Identity) setTokenHash(h string) {
	id.mu.Lock()
	defer id.mu.Unlock()
	id.tokenHash = h
}

func (id *Identity) getTokenHash() string {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.tokenHash
}

// readToken reads the registration token; any failure wraps
// ErrNoRegistrationToken.
func (id *Identity) readToken() (string, error) {
	f := id.cfg.RegistrationTokenFile
	if f == "" {
		return "", fmt.Errorf("%w: no registration token file is configured", ErrNoRegistrationToken)
	}
	b, err := os.ReadFile(f)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: %s does not exist", ErrNoRegistrationToken, f)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoRegistrationToken, err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("%w: %s is empty", ErrNoRegistrationToken, f)
	}
	return t, nil
}

func (id *Identity) tokenFileName() string {
	if id.cfg.RegistrationTokenFile == "" {
		return "a file and configure it as the registration token file"
	}
	return id.cfg.RegistrationTokenFile
}

// enrol asks the relay for a certificate with the registration token, stores
// it and makes it current. oldCA is also trusted for the call.
func (id *Identity) enrol(ctx context.Context, token string, oldCA []byte) error {
	key, csr, err := newKeyAndCSR(id.cfg.Cluster)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: id.roots(oldCA)}
	is, err := id.call(ctx, tlsCfg, api.EnrollPath, api.EnrollRequest{Cluster: id.cfg.Cluster, Token: token, CSR: csr})
	if err != nil {
		return fmt.Errorf("identity: enrol cluster %s with relay %s: %w", id.cfg.Cluster, id.base, err)
	}
	cert, err := certificate(is, key, id.now())
	if err != nil {
		return fmt.Errorf("identity: enrol cluster %s: %w", id.cfg.Cluster, err)
	}
	st := id.newState(cert, wire.EncodeCertificates(is.CABundle...))
	id.setTokenHash(tokenHash(token))
	serr := id.store(ctx, st)
	// The token is spent: use the certificate even if it is not stored yet;
	// Run keeps trying to store it.
	id.swap(st)
	id.log.Info("enrolled the cluster with the relay", "notAfter", st.notAfter().UTC().Format(time.RFC3339))
	if serr != nil {
		id.log.Error("enrolled, but the certificate is not stored yet; Run retries; a restart before it is stored needs a new registration token", "err", serr)
	}
	return nil
}

func (id *Identity) newState(cert *tls.Certificate, caPEM []byte) *state {
	return &state{cert: cert, caPEM: caPEM, roots: id.roots(caPEM)}
}

// roots is the pool the relay is verified with.
func (id *Identity) roots(caPEM []byte) *x509.CertPool {
	pool := trust.SystemPool()
	pool.AppendCertsFromPEM(id.extraCA)
	pool.AppendCertsFromPEM(caPEM)
	return pool
}

// swap makes st current and signals Rotated if it replaces a certificate.
func (id *Identity) swap(st *state) {
	if id.cur.Swap(st) == nil {
		return
	}
	select {
	case id.rotated <- struct{}{}:
	default:
	}
}

// Certificate returns the current certificate (Leaf set), nil before Ensure.
func (id *Identity) Certificate() *tls.Certificate {
	if st := id.cur.Load(); st != nil {
		return st.cert
	}
	return nil
}

// NotAfter returns the current certificate's expiry; zero before Ensure.
func (id *Identity) NotAfter() time.Time {
	if st := id.cur.Load(); st != nil {
		return st.notAfter()
	}
	return time.Time{}
}

// Rotated receives after each renewal (or re-registration by Run) that
// replaced the certificate. It holds at most one signal: a slow reader sees
// one for several renewals.
func (id *Identity) Rotated() <-chan struct{} { return id.rotated }

// TLSConfig returns a client configuration for the relay. Every handshake
// presents the certificate current at that moment, so connections made
// after a renewal use the new one while open ones go on. RootCAs is the
// system pool, RelayCAFile and the relay's CA bundle as of this call: take
// a new config after Rotated to pick up a changed bundle.
func (id *Identity) TLSConfig() *tls.Config {
	var roots *x509.CertPool
	if st := id.cur.Load(); st != nil {
		roots = st.roots
	} else {
		roots = id.roots(nil)
	}
	return id.tlsConfig(roots)
}

func (id *Identity) tlsConfig(roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if st := id.cur.Load(); st != nil {
				return st.cert, nil
			}
			return &tls.Certificate{}, nil // none yet: send no certificate
		},
	}
}

// HTTPClient returns a client for agent→relay calls authenticated by the
// current certificate. After a renewal it drops its idle connections and
// handshakes anew with the new certificate and CA bundle. It has no timeout:
// bound calls with the request's context.
func (id *Identity) HTTPClient() *http.Client {
	return &http.Client{Transport: &rotatingTransport{id: id}}
}

// rotatingTransport is an http.Transport per certificate.
type rotatingTransport struct {
	id *Identity
	mu sync.Mutex
	st *state
	tr *http.Transport
}

func (t *rotatingTransport) transport() *http.Transport {
	st := t.id.cur.Load()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tr == nil || t.st != st {
		if t.tr != nil {
			t.tr.CloseIdleConnections()
		}
		var roots *x509.CertPool
		if st != nil {
			roots = st.roots
		} else {
			roots = t.id.roots(nil)
		}
		t.tr = relayTransport(t.id.tlsConfig(roots))
		t.tr.DisableKeepAlives = false
		t.tr.IdleConnTimeout = 90 * time.Second
		t.st = st
	}
	return t.tr
}

func (t *rotatingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.transport().RoundTrip(r)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport in use.
func (t *rotatingTransport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tr != nil {
		t.tr.CloseIdleConnections()
	}
}

// readCABundle reads the --relay-ca-file bundle; empty file means none.
func readCABundle(file string) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err == nil {
		var certs []*x509.Certificate
		if certs, err = wire.ParseCertificates(b); err == nil && len(certs) == 0 {
			err = errors.New("no certificate in it")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("relay CA bundle %s: %w", file, err)
	}
	return b, nil
}
