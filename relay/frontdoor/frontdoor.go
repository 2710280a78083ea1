// Package frontdoor admits requests to clusters before a stream is opened:
// every caller proves a relay identity (an Entra token, or a relay client
// certificate beside a service-account token), must hold the connect action
// on the cluster, and stays within its limits; each admitted or refused
// request leaves an audit record. Refusals cost the cluster's agent nothing:
// no stream is opened and nothing is dialled.
package frontdoor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/relay/access"
	"github.com/clusterconnect/clusterconnect/relay/audit"
	"github.com/clusterconnect/clusterconnect/relay/authn"
	"github.com/clusterconnect/clusterconnect/relay/dataplane"
	"github.com/clusterconnect/clusterconnect/relay/fleet"
	"github.com/clusterconnect/clusterconnect/relay/limits"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// Config wires a Door. Authn, Store and Plane are required.
type Config struct {
	Authn *authn.Authenticator
	Store store.Store
	Plane *dataplane.Plane
	// Limits; nil means no limits.
	Limits *limits.Limiter
	// Audit receives one record per request; nil means none.
	Audit *audit.Log
	// HostSuffix, when set, lets a request name its cluster by the TLS
	// server name (or Host) <cluster>.<HostSuffix> instead of the path, for
	// clients that drop the server URL's path (kubectl --raw before 1.34,
	// kubectl proxy, Lens).
	HostSuffix string
	// DecisionTTL is how long an admission decision is reused for the same
	// principal and cluster; zero means 5 s. A decision never outlives the
	// assignment it rests on.
	DecisionTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil means discard.
	Logger *slog.Logger
}

// Door is the data path's front door: an http.Handler for /clusters/{name}/…
// and, through ClusterByHost, for per-cluster host names.
type Door struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	decisions map[decisionKey]decision
	// gen counts Forget calls: a decision computed before one is not cached.
	gen uint64
	// sessions are the long-running requests in flight (watch, exec,
	// attach, port-forward, logs -f): re-checked when access changes, and
	// ended when it is gone.
	sessions   map[*session]struct{}
	rechecking bool
	again      bool
}

// session is a long-running request in flight.
type session struct {
	p       api.Principal
	cluster string
	cancel  context.CancelFunc
}

type decisionKey struct{ kind, id, cluster string }

type decision struct {
	grant   access.Grant
	expires time.Time
}

// maxDecisions bounds the decision cache; when full it starts over.
const maxDecisions = 100_000

// New returns a Door.
func New(cfg Config) (*Door, error) {
	if cfg.Authn == nil || cfg.Store == nil || cfg.Plane == nil {
		return nil, errors.New("frontdoor: Authn, Store and Plane are required")
	}
	if cfg.DecisionTTL == 0 {
		cfg.DecisionTTL = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.HostSuffix = strings.Trim(strings.ToLower(cfg.HostSuffix), ".")
	return &Door{cfg: cfg, log: cfg.Logger, decisions: map[decisionKey]decision{}, sessions: map[*session]struct{}{}}, nil
}

// ClusterByHost returns the cluster a request names by its TLS server name,
// or else its Host header, as <cluster>.<HostSuffix>.
func (d *Door) ClusterByHost(r *http.Request) (string, bool) {
	if d.cfg.HostSuffix == "" {
		return "", false
	}
	for _, h := range []string{serverName(r), r.Host} {
		if name, ok := d.clusterOf(h); ok {
			return name, true
		}
	}
	return "", false
}

// clusterOf returns the cluster a host name <cluster>.<HostSuffix> names.
func (d *Door) clusterOf(h string) (string, bool) {
	if d.cfg.HostSuffix == "" {
		return "", false
	}
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if name, ok := strings.CutSuffix(h, "."+d.cfg.HostSuffix); ok && name != "" && !strings.Contains(name, ".") {
		return name, true
	}
	return "", false
}

func serverName(r *http.Request) string {
	if r.TLS == nil {
		return ""
	}
	return r.TLS.ServerName
}

// ServeHTTP admits and proxies a request for /clusters/{name}/….
func (d *Door) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	d.Serve(w, r, name, api.ClusterProxyPrefix+name)
}

// ServeHost admits and proxies a request whose host names the cluster. The
// issued kubeconfig carries both the TLS server name and the path
// /clusters/<name>, so that clients which ignore tls-server-name still reach
// the cluster by path: a path under the same cluster's prefix has it
// removed. A Host or a path that names another cluster than the TLS server
// name (a connection reused across clusters) gets 421, so the client dials
// again.
func (d *Door) ServeHost(w http.ResponseWriter, r *http.Request, name string) {
	other, ok := d.clusterOf(r.Host)
	prefix := ""
	if rest, under := strings.CutPrefix(r.URL.Path, api.ClusterProxyPrefix); under {
		seg, _, _ := strings.Cut(rest, "/")
		other, ok, prefix = seg, true, api.ClusterProxyPrefix+seg
	}
	if ok && other != name {
		apistatus.Write(w, http.StatusMisdirectedRequest, "MisdirectedRequest", fmt.Sprintf("this connection is for cluster %q, the request for %q: open a new connection", name, other))
		return
	}
	d.Serve(w, r, name, prefix)
}

// Serve admits a request for cluster name and proxies it with prefix
// removed from its path.
func (d *Door) Serve(w http.ResponseWriter, r *http.Request, name, prefix string) {
	start := d.cfg.Now()
	// What the client sent is cut short: an anonymous caller must not be
	// able to make the audit log hold megabytes per refused request.
	rec := api.AuditRecord{Time: start.UTC(), Kind: api.AuditRequest, Cluster: clip(name, 64), Method: clip(r.Method, 16), Path: clip(r.URL.RequestURI(), maxAuditPath),
		Client: clientAddr(r), Impersonate: clip(r.Header.Get("Impersonate-User"), 256)}
	res, aerr := d.cfg.Authn.DataPath(r.Context(), r)
	if aerr != nil {
		d.refuse(w, &rec, start, aerr.Code, aerr.Reason, aerr.Message, 0)
		return
	}
	if res.Principal.Kind == api.PrincipalKindPeer {
		// Another replica admitted (and audited, and counted) this request
		// and forwards it here, where the cluster's tunnels are.
		p, err := fleet.PrincipalOf(r.Header.Get(api.HeaderForwardedPrincipal))
		if err != nil {
			d.refuse(w, &rec, start, http.StatusBadRequest, "BadRequest", "a forwarded request without a valid "+api.HeaderForwardedPrincipal+" header", 0)
			return
		}
		d.log.Debug("serving a request forwarded by a peer", "peer", res.Principal.ID, "principal", p.Kind+":"+p.ID, "cluster", name)
		d.cfg.Plane.ServeCluster(w, r, name, prefix, dataplane.Caller{Principal: p, Forwarded: true,
			Client: fleet.ForwardedClientOf(r.Header.Get(api.HeaderForwardedClient))})
		return
	}
	rec.Principal = res.Principal
	g, err := d.grant(r.Context(), name, res.Principal)
	if err != nil {
		d.log.Warn("admission: store unavailable", "cluster", name, "err", err)
		d.refuse(w, &rec, start, http.StatusServiceUnavailable, "ServiceUnavailable", "the relay cannot check access right now (its store is unavailable): retry", 1)
		return
	}
	if !g.Allowed {
		// An unknown cluster and one the caller may not use answer the same.
		d.refuse(w, &rec, start, http.StatusForbidden, api.ReasonForbidden, fmt.Sprintf(
			"%s %s (%s) may not connect to cluster %q on this relay, or no such cluster is registered: ask an Owner for a role assignment on it (connectctl role assign --assignee %s --role Viewer --cluster %s)",
			res.Principal.Kind, res.Principal.ID, orDash(res.Principal.Name), name, res.Principal.ID, name), 0)
		return
	}
	long := limits.LongRunning(r)
	if long {
		// A session lasts no longer than the assignment that admitted it,
		// and ends when a change takes its access away.
		ctx, cancel := context.WithCancel(r.Context())
		if !g.Until.IsZero() {
			ctx, cancel = context.WithDeadline(r.Context(), g.Until)
		}
		s := &session{p: res.Principal, cluster: name, cancel: cancel}
		d.mu.Lock()
		d.sessions[s] = struct{}{}
		d.mu.Unlock()
		defer func() {
			d.mu.Lock()
			delete(d.sessions, s)
			d.mu.Unlock()
			cancel()
		}()
		r = r.WithContext(ctx)
	}
	if d.cfg.Limits != nil {
		release, refusal := d.cfg.Limits.Admit(res.Principal.Kind+":"+res.Principal.ID, name, long)
		if refusal != nil {
			d.refuse(w, &rec, start, refusal.Code, refusal.Reason, refusal.Message, int(refusal.RetryAfter.Round(time.Second)/time.Second))
			return
		}
		defer release()
	}
	d.proxy(w, r, name, prefix, &rec, start)
}

// proxy forwards an admitted request and audits it.
func (d *Door) proxy(w http.ResponseWriter, r *http.Request, name, prefix string, rec *api.AuditRecord, start time.Time) {
	if d.cfg.Audit == nil {
		d.cfg.Plane.ServeCluster(w, r, name, prefix, dataplane.Caller{Principal: rec.Principal, Client: rec.Client})
		return
	}
	m, mw, mr := audit.Meter(w, r)
	// An upgrade the cluster accepted (exec, attach, port-forward) is a
	// session: a start record when the connection is handed over, an end
	// record with its bytes and duration when it closes.
	m.OnHijack(func() {
		s := *rec
		s.Kind, s.Event, s.Status = api.AuditSession, api.AuditStart, http.StatusSwitchingProtocols
		d.cfg.Audit.Record(s)
	})
	// For an upgrade, ReverseProxy returns once the byte pipe is over and
	// both connections are closed.
	d.cfg.Plane.ServeCluster(mw, mr, name, prefix, dataplane.Caller{Principal: rec.Principal, Client: rec.Client})
	out := *rec
	if m.Hijacked() {
		out.Kind, out.Event = api.AuditSession, api.AuditEnd
	}
	out.Status = m.Status()
	out.BytesIn, out.BytesOut = m.BytesIn(), m.BytesOut()
	out.DurationMS = float64(d.cfg.Now().Sub(start).Microseconds()) / 1000
	d.cfg.Audit.Record(out)
}

func (d *Door) refuse(w http.ResponseWriter, rec *api.AuditRecord, start time.Time, code int, reason, msg string, retryAfter int) {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(retryAfter))
	}
	apistatus.Write(w, code, metav1.StatusReason(reason), msg)
	if d.cfg.Audit != nil {
		rec.Status, rec.Reason = code, reason
		rec.DurationMS = float64(d.cfg.Now().Sub(start).Microseconds()) / 1000
		d.cfg.Audit.Record(*rec)
	}
}

// grant decides (or reuses a fresh decision) whether p may connect to cluster.
func (d *Door) grant(ctx context.Context, cluster string, p api.Principal) (access.Grant, error) {
	now := d.cfg.Now()
	k := decisionKey{p.Kind, p.ID, cluster}
	d.mu.Lock()
	if e, ok := d.decisions[k]; ok && now.Before(e.expires) {
		d.mu.Unlock()
		return e.grant, nil
	}
	gen := d.gen
	d.mu.Unlock()
	g, err := access.CanConnect(ctx, d.cfg.Store, cluster, p, now)
	if err != nil {
		return g, err
	}
	exp := now.Add(d.cfg.DecisionTTL)
	if !g.Until.IsZero() && g.Until.Before(exp) {
		exp = g.Until
	}
	d.mu.Lock()
	if d.gen == gen { // no change since CanConnect read the store
		if len(d.decisions) >= maxDecisions {
			clear(d.decisions)
		}
		d.decisions[k] = decision{grant: g, expires: exp}
	}
	d.mu.Unlock()
	return g, nil
}

// Forget drops cached decisions (all of them: assignments, tokens or
// clusters changed) and re-checks the sessions in flight, ending those whose
// access is gone.
func (d *Door) Forget() {
	d.mu.Lock()
	clear(d.decisions)
	d.gen++
	if d.rechecking {
		d.again = true
		d.mu.Unlock()
		return
	}
	d.rechecking = true
	d.mu.Unlock()
	go d.recheck()
}

// recheck runs until no Forget came in while it ran.
func (d *Door) recheck() {
	for {
		d.mu.Lock()
		ss := make([]*session, 0, len(d.sessions))
		for s := range d.sessions {
			ss = append(ss, s)
		}
		d.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for _, s := range ss {
			g, err := access.CanConnect(ctx, d.cfg.Store, s.cluster, s.p, d.cfg.Now())
			if err == nil && !g.Allowed {
				d.log.Info("ending a session: its access was revoked", "principal", s.p.Kind+":"+s.p.ID, "cluster", s.cluster)
				s.cancel()
			}
		}
		cancel()
		d.mu.Lock()
		if !d.again {
			d.rechecking = false
			d.mu.Unlock()
			return
		}
		d.again = false
		d.mu.Unlock()
	}
}

// maxAuditPath bounds the path (with query) an audit record keeps.
const maxAuditPath = 2048

// clip cuts s to at most n bytes, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func clientAddr(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
