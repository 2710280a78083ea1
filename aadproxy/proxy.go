package aadproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/pkg/bufpool"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
)

// Verifier is what the proxy needs of a token verifier (*entra.Verifier).
type Verifier interface {
	Verify(ctx context.Context, raw string) (*entra.Identity, error)
}

// Config wires a [Proxy]. Verifier and Upstream are required.
type Config struct {
	// Verifier verifies Entra tokens.
	Verifier Verifier
	// Upstream is the apiserver and the proxy's own credentials (in-cluster
	// config or a kubeconfig). Its Impersonate field must be empty: the
	// proxy sets the impersonation headers itself, per request.
	Upstream *rest.Config
	// Registry receives the proxy's metrics; nil registers none.
	Registry prometheus.Registerer
	// Logger receives the audit line of every request; nil discards.
	Logger *slog.Logger
}

// Proxy is kube-aad-proxy's http.Handler: it verifies the caller's token and
// forwards to the apiserver, impersonating Entra users and passing other
// bearer tokens through.
type Proxy struct {
	log         *slog.Logger
	verifier    Verifier
	impersonate *httputil.ReverseProxy // the proxy's credentials + Impersonate-*
	passthrough *httputil.ReverseProxy // no credentials of the proxy's
	requests    *prometheus.CounterVec
	refused     prometheus.Counter
}

// forwardKey carries a *forward from ServeHTTP to Rewrite.
type forwardKey struct{}

// forward is how Rewrite treats one request.
type forward struct {
	// id is impersonated with the proxy's credentials; nil passes the
	// client's own credentials (or none) through.
	id *entra.Identity
	// clientImpersonation keeps the client's Impersonate-* headers: a
	// pass-through token's, which the apiserver authorizes by RBAC.
	clientImpersonation bool
}

// New checks cfg and returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Verifier == nil {
		return nil, errors.New("aadproxy: a token verifier is required")
	}
	if cfg.Upstream == nil {
		return nil, errors.New("aadproxy: the upstream apiserver config is required (in-cluster or --kubeconfig)")
	}
	if cfg.Upstream.Impersonate.UserName != "" || len(cfg.Upstream.Impersonate.Groups) > 0 || cfg.Upstream.Impersonate.UID != "" {
		return nil, errors.New("aadproxy: the upstream config must not impersonate (remove 'as' from the kubeconfig): the proxy sets impersonation per request")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	target, err := upstreamURL(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	// Two identities towards the apiserver: the proxy's own (for
	// impersonation) and none (pass-through: the client's token only).
	own := rest.CopyConfig(cfg.Upstream)
	ownRT, err := transports(own)
	if err != nil {
		return nil, fmt.Errorf("aadproxy: transport to the apiserver with the proxy's credentials: %w", err)
	}
	anonRT, err := transports(rest.AnonymousClientConfig(cfg.Upstream))
	if err != nil {
		return nil, fmt.Errorf("aadproxy: transport to the apiserver: %w", err)
	}
	p := &Proxy{
		log:      cfg.Logger,
		verifier: cfg.Verifier,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "aadproxy", Name: "requests_total",
			Help: "Requests by HTTP status code, including those the proxy refused itself.",
		}, []string{"code"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "aadproxy", Name: "impersonation_attempts_total",
			Help: "Requests refused with 403 because the client sent Impersonate-* headers as an Entra user or without a token.",
		}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(p.requests, p.refused)
	}
	errLog := slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)
	rewrite := func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		// Rewrite starts without X-Forwarded-*. The relay sets
		// X-Forwarded-For to the client's address (replacing what the
		// client sent): forward it, with this hop (the agent) appended, so
		// that the apiserver's audit log records it (sourceIPs).
		pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
		pr.SetXForwarded()
		f, _ := pr.In.Context().Value(forwardKey{}).(*forward)
		if f == nil {
			f = &forward{}
		}
		rewriteHeaders(pr.Out.Header, f.id, f.clientImpersonation)
	}
	mk := func(rt http.RoundTripper) *httputil.ReverseProxy {
		return &httputil.ReverseProxy{
			Rewrite:        rewrite,
			Transport:      rt,
			FlushInterval:  -1, // watches and logs -f: every chunk goes out as it comes
			ErrorHandler:   p.proxyError,
			BufferPool:     bufpool.Pool{},
			ModifyResponse: recordStatus,
			ErrorLog:       errLog,
		}
	}
	p.impersonate, p.passthrough = mk(ownRT), mk(anonRT)
	return p, nil
}

// transports returns a RoundTripper for c (client-go's TLS, credentials
// and wrappers) that sends upgrade requests over HTTP/1.1: Go's transport
// would send a SPDY upgrade over a pooled HTTP/2 connection, which cannot
// carry it.
func transports(c *rest.Config) (http.RoundTripper, error) {
	c.UserAgent = "" // keep the client's User-Agent
	h2, err := rest.TransportFor(c)
	if err != nil {
		return nil, err
	}
	h1c := rest.CopyConfig(c)
	h1c.TLSClientConfig.NextProtos = []string{"http/1.1"}
	h1, err := rest.TransportFor(h1c)
	if err != nil {
		return nil, err
	}
	return upgradeAware{h2: h2, h1: h1}, nil
}

type upgradeAware struct{ h2, h1 http.RoundTripper }

func (u upgradeAware) RoundTrip(r *http.Request) (*http.Response, error) {
	if isUpgrade(r.Header) {
		return u.h1.RoundTrip(r)
	}
	return u.h2.RoundTrip(r)
}

// isUpgrade reports a "Connection: upgrade" request with an Upgrade header.
func isUpgrade(h http.Header) bool {
	if h.Get("Upgrade") == "" {
		return false
	}
	for _, v := range h.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

func upstreamURL(c *rest.Config) (*url.URL, error) {
	host := c.Host
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	u, err := url.Parse(host)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("aadproxy: upstream apiserver %q is not a URL: %v", c.Host, err)
	}
	if c.APIPath != "" && c.APIPath != "/api" {
		return nil, fmt.Errorf("aadproxy: upstream APIPath %q: the proxy forwards paths as they are", c.APIPath)
	}
	return u, nil
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a := &audit{start: time.Now(), mode: "anonymous"}
	rec := &recorder{ResponseWriter: w, a: a}
	defer p.finish(r, a)
	r = r.WithContext(context.WithValue(r.Context(), auditKey{}, a))

	names := impersonationHeaders(r.Header)
	raw, ok := bearer(r)
	if !ok {
		if len(names) > 0 {
			p.refuse(rec, r, a, names, "kube-aad-proxy: impersonation needs credentials: a request without a bearer token cannot carry "+strings.Join(names, ", "))
			return
		}
		// No credentials: the apiserver decides (anonymous), and sees none
		// of the proxy's.
		p.passthrough.ServeHTTP(rec, r)
		return
	}
	id, err := p.verifier.Verify(r.Context(), raw)
	switch {
	case errors.Is(err, entra.ErrNotEntra):
		// Not an Entra token (a service account's): it goes to the
		// apiserver as it came, Impersonate-* included, for the apiserver
		// to authenticate and to authorize the impersonation by RBAC.
		a.mode, a.impersonation = "passthrough", names
		p.passthrough.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), forwardKey{}, &forward{clientImpersonation: true})))
	case err != nil:
		a.mode, a.reason = "rejected", string(entra.ReasonOf(err))
		code := http.StatusUnauthorized
		if entra.ReasonOf(err) == entra.ReasonIssuerUnavailable {
			code = http.StatusServiceUnavailable
		}
		apistatus.Error(rec, code, "kube-aad-proxy: "+err.Error())
	case len(names) > 0:
		a.user = id.Username
		p.refuse(rec, r, a, names, "kube-aad-proxy: impersonation is not allowed through cluster connect for Entra users: the proxy already impersonates "+
			id.Username+" on the apiserver and cannot also act on "+strings.Join(names, ", ")+"; remove --as/--as-group")
	default:
		a.mode, a.user, a.groups = "impersonate", id.Username, len(id.Groups)
		p.impersonate.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), forwardKey{}, &forward{id: id})))
	}
}

// refuse answers 403 to a request whose Impersonate-* headers (names) the
// proxy does not forward.
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, a *audit, names []string, msg string) {
	a.mode = "refused"
	p.refused.Inc()
	p.log.Warn("refused a request carrying impersonation headers", "headers", strings.Join(names, ","), "user", a.user,
		"remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "user_agent", r.UserAgent())
	apistatus.Write(w, http.StatusForbidden, metav1.StatusReasonForbidden, msg)
}

func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		// The client went away; nobody to answer.
		if a, ok := r.Context().Value(auditKey{}).(*audit); ok && a.code == 0 {
			a.code = 499
		}
		return
	}
	p.log.Warn("apiserver request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	apistatus.Error(w, http.StatusBadGateway, "kube-aad-proxy could not reach the Kubernetes API server: "+err.Error())
}

// audit collects what the per-request log line says.
type audit struct {
	start  time.Time
	mode   string // impersonate, passthrough, anonymous, rejected, refused
	user   string
	groups int
	reason string
	code   int
	// impersonation are the Impersonate-* headers passed through.
	impersonation []string
}

type auditKey struct{}

// recordStatus notes the apiserver's status, including 101 for upgrades
// (whose response is written on the hijacked connection, not through
// WriteHeader).
func recordStatus(resp *http.Response) error {
	if a, ok := resp.Request.Context().Value(auditKey{}).(*audit); ok {
		a.code = resp.StatusCode
	}
	return nil
}

func (p *Proxy) finish(r *http.Request, a *audit) {
	if a.code == 0 {
		a.code = http.StatusOK
	}
	p.requests.WithLabelValues(strconv.Itoa(a.code)).Inc()
	attrs := []slog.Attr{
		slog.String("mode", a.mode),
		slog.String("user", a.user),
		slog.Int("groups", a.groups),
		slog.String("verb", verb(r)),
		slog.String("path", r.URL.Path),
		slog.Int("status", a.code),
		slog.Duration("latency", time.Since(a.start)),
	}
	if a.reason != "" {
		attrs = append(attrs, slog.String("reason", a.reason))
	}
	if len(a.impersonation) > 0 {
		attrs = append(attrs, slog.String("impersonation", strings.Join(a.impersonation, ",")))
	}
	p.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// recorder notes the status code of responses written through it. It
// unwraps for http.ResponseController (Flush, Hijack for upgrades).
type recorder struct {
	http.ResponseWriter
	a *audit
}

func (rw *recorder) WriteHeader(code int) {
	if rw.a.code == 0 || rw.a.code == http.StatusSwitchingProtocols {
		rw.a.code = code
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(b []byte) (int, error) {
	if rw.a.code == 0 {
		rw.a.code = http.StatusOK
	}
	return rw.ResponseWriter.Write(b)
}

func (rw *recorder) Flush() { http.NewResponseController(rw.ResponseWriter).Flush() }

func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }
