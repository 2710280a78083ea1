// Package dataplane is the relay's hot path: it keeps each cluster's pool of
// agent tunnels, and proxies kubectl's requests for /clusters/<name>/… into a
// stream of one of them (prefix removed, upgrades as byte pipes, responses
// flushed as they stream). Nothing on this path touches the store, except to
// tell an unknown cluster (404) from a disconnected one (503) once there is no
// tunnel.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/pkg/bufpool"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

// Config wires a Plane.
type Config struct {
	// Registered reports whether a cluster is registered; the plane asks
	// only when a cluster has no tunnel (404 or 503), and after accepting a
	// tunnel (a delete that raced with the connect wins). Required.
	Registered func(ctx context.Context, name string) (bool, error)
	// Tunnel tunes the relay's side of each tunnel. Nil means defaults.
	Tunnel *tunnel.Config
	// Metrics of the tunnels; nil means none.
	Metrics *tunnel.Metrics
	// Registry receives the proxy's request counter; nil means none.
	Registry prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil means discard.
	Logger *slog.Logger
	// Fleet, when set, is the relay fleet this replica belongs to: it
	// learns how many tunnels of each cluster this replica holds, and takes
	// the requests for clusters whose tunnels are all on other replicas.
	Fleet Fleet
	// Replica names this relay replica to agents (tunnel.HeaderReplica);
	// empty for a relay that is no fleet.
	Replica string
}

// Fleet is what the plane needs of relay/fleet.
type Fleet interface {
	Tunnels(cluster string, n int)
	// Peers is the other replicas' tunnels of cluster, by replica.
	Peers(cluster string) map[string]int
	// Release withdraws this replica's tunnel ownership at once (it is
	// draining: the others must stop forwarding to it).
	Release()
	// Forward proxies r, admitted for p, to a replica with a tunnel of
	// cluster; false (nothing written) when there is none.
	Forward(w http.ResponseWriter, r *http.Request, cluster, prefix string, c Caller) bool
}

// Caller is who ServeCluster serves a request for: the principal the front
// door admitted (a fleet forwards it to the owner of the cluster's
// tunnels), and whether another replica forwarded the request here (then
// it is served by this replica's tunnels or not at all).
type Caller struct {
	Principal api.Principal
	Forwarded bool
	// Client is the caller's address as the front door saw it (for a
	// forwarded request, the replica that admitted it); the cluster gets it
	// as X-Forwarded-For. Empty: the request's own RemoteAddr.
	Client string
}

// BusyRetryAfter is the Retry-After (seconds) of a 503 ClusterBusy.
const BusyRetryAfter = 1

// Plane holds the tunnels and proxies into them. It is an http.Handler for
// the /clusters/{name}/… routes.
type Plane struct {
	cfg   Config
	log   *slog.Logger
	proxy *httputil.ReverseProxy
	tr    *http.Transport
	reqs  *prometheus.CounterVec

	// drainingTunnels counts tunnels whose agent is draining but that are
	// not closed yet: while it is not zero, a finished request closes the
	// proxy's idle connections, each an open stream that would otherwise
	// hold the agent's drain until its deadline.
	drainingTunnels atomic.Int64

	mu       sync.Mutex
	pools    map[string]*tunnel.Pool
	draining bool
	inflight sync.WaitGroup // proxied requests, upgrades included
	agents   sync.WaitGroup // accepted tunnels
	shutdown chan struct{}
	stopOnce sync.Once
}

// New returns a Plane for cfg.
func New(cfg Config) (*Plane, error) {
	if cfg.Registered == nil {
		return nil, errors.New("dataplane: Registered is required")
	}
	if err := cfg.Tunnel.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Plane{
		cfg:      cfg,
		log:      cfg.Logger,
		pools:    map[string]*tunnel.Pool{},
		shutdown: make(chan struct{}),
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "relay", Name: "proxy_requests_total",
			Help: "Requests proxied to clusters, by HTTP status code.",
		}, []string{"code"}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(p.reqs)
	}
	p.tr = &http.Transport{
		DialContext:           p.dialCluster,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Pass the client's Accept-Encoding through untouched.
		DisableCompression: true,
		WriteBufferSize:    64 << 10,
		ReadBufferSize:     64 << 10,
	}
	p.proxy = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: p.tr,
		// Streaming responses (watch, logs -f: no Content-Length) are
		// flushed on every write by ReverseProxy itself; sized responses
		// go out in full buffers rather than one TLS record per write.
		FlushInterval:  0,
		ErrorHandler:   p.proxyError,
		BufferPool:     bufpool.Pool{},
		ModifyResponse: func(r *http.Response) error { p.reqs.WithLabelValues(fmt.Sprint(r.StatusCode)).Inc(); return nil },
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return p, nil
}

// Replicas is, in a fleet, every replica's tunnels of cluster (this one's
// live count, the others' from the fleet's records), by name, those with
// none left out; nil for a relay that is no fleet.
func (p *Plane) Replicas(name string) []api.ReplicaTunnels {
	if p.cfg.Fleet == nil {
		return nil
	}
	var out []api.ReplicaTunnels
	if n := p.Connected(name); n > 0 {
		out = append(out, api.ReplicaTunnels{Replica: p.cfg.Replica, Tunnels: n})
	}
	for r, n := range p.cfg.Fleet.Peers(name) {
		if n > 0 && r != p.cfg.Replica {
			out = append(out, api.ReplicaTunnels{Replica: r, Tunnels: n})
		}
	}
	slices.SortFunc(out, func(a, b api.ReplicaTunnels) int { return strings.Compare(a.Replica, b.Replica) })
	return out
}

// Connected reports the number of live tunnels of a cluster.
func (p *Plane) Connected(name string) int {
	p.mu.Lock()
	pl := p.pools[name]
	p.mu.Unlock()
	if pl == nil {
		return 0
	}
	return pl.Len()
}

func (p *Plane) pool(name string, create bool) *tunnel.Pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.pools[name]
	if pl == nil && create {
		pl = &tunnel.Pool{}
		p.pools[name] = pl
	}
	return pl
}

// Accept upgrades an authenticated agent's request to a tunnel of cluster
// and returns once the tunnel is in the cluster's pool: the tunnel lives on
// until it closes, the relay shuts down, or expires (the credential's end;
// zero means never) passes. No goroutine waits for its end — what must
// happen then runs from the session's close hooks — so an idle tunnel costs
// no handler goroutine, nor the HTTP server's state for the request. log
// carries the connection's attributes.
//
// valid re-checks the agent's credential once the tunnel is in the pool:
// a re-registration (which revokes older certificates and closes their
// tunnels) or a delete that raced with this connect must still win, so a
// non-nil error closes the tunnel at once. Nil means only that the cluster
// must still be registered.
func (p *Plane) Accept(w http.ResponseWriter, r *http.Request, cluster string, expires time.Time, valid func(context.Context) error, log *slog.Logger) {
	select {
	case <-p.shutdown:
		apistatus.Error(w, http.StatusServiceUnavailable, "relay is shutting down; reconnect later")
		return
	default:
	}
	tc := p.cfg.Tunnel.WithLogger(log).WithMetrics(p.cfg.Metrics)
	if p.cfg.Replica != "" {
		// The agent learns which replica it reached, to spread its
		// tunnels over distinct ones.
		w.Header().Set(tunnel.HeaderReplica, p.cfg.Replica)
	}
	sess, err := tunnel.Accept(w, r, tc)
	if err != nil {
		log.Warn("tunnel upgrade failed", "err", err)
		return
	}
	p.agents.Add(1)
	pl := p.pool(cluster, true)
	// The count of draining tunnels must not outlive this tunnel, even when
	// its drain starts as it closes.
	var hookMu sync.Mutex
	var counted, ended bool
	sess.OnDrain(func() {
		hookMu.Lock()
		if !counted && !ended {
			counted = true
			p.drainingTunnels.Add(1)
		}
		hookMu.Unlock()
		// Not on the tunnel's read loop: closing connections writes to it.
		go p.tr.CloseIdleConnections()
	})
	// The tunnel lives no longer than the credential it was opened with.
	var expiry *time.Timer
	if !expires.IsZero() {
		expiry = time.AfterFunc(expires.Sub(p.cfg.Now()), func() {
			log.Warn("closing tunnel: its certificate expired", "expired", expires)
			sess.Close()
		})
	}
	pl.Add(sess) // its close hook, registered first, takes it out of the pool
	sess.OnClose(func() {
		if expiry != nil {
			expiry.Stop()
		}
		hookMu.Lock()
		ended = true
		if counted {
			p.drainingTunnels.Add(-1)
		}
		hookMu.Unlock()
		p.tunnels(cluster, pl)
		log.Info("agent tunnel closed", "tunnels", pl.Len())
		p.agents.Done()
	})
	p.tunnels(cluster, pl)
	if valid == nil {
		valid = func(ctx context.Context) error {
			if ok, err := p.cfg.Registered(ctx, cluster); err == nil && !ok {
				return errors.New("cluster deleted")
			}
			return nil
		}
	}
	vctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = valid(vctx)
	cancel()
	if err != nil {
		log.Warn("closing tunnel: its credential was revoked while it connected", "err", err)
		sess.Close()
		return
	}
	log.Info("agent tunnel connected", "tunnels", pl.Len(), "credential_expires", expires)
}

// tunnels tells the fleet how many tunnels of cluster this replica holds.
func (p *Plane) tunnels(cluster string, pl *tunnel.Pool) {
	if p.cfg.Fleet == nil {
		return
	}
	p.mu.Lock()
	cur := p.pools[cluster]
	p.mu.Unlock()
	if cur != pl {
		// A pool closed (deleted, re-registered) and replaced since: its
		// tunnels' ends say nothing about the current one.
		return
	}
	p.cfg.Fleet.Tunnels(cluster, pl.Len())
}

// Clusters lists the clusters with a pool of tunnels here.
func (p *Plane) Clusters() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.pools))
	for name := range p.pools {
		out = append(out, name)
	}
	return out
}

// CloseTunnels closes every tunnel of a cluster at once.
func (p *Plane) CloseTunnels(name, why string) {
	p.mu.Lock()
	pl := p.pools[name]
	delete(p.pools, name)
	p.mu.Unlock()
	if pl != nil {
		pl.Close()
	}
	if p.cfg.Fleet != nil {
		p.cfg.Fleet.Tunnels(name, 0)
	}
	p.log.Info("tunnels closed", "cluster", name, "why", why)
}

// target is what ServeCluster tells the proxy's Rewrite: which cluster, and
// which path prefix to remove.
type target struct{ cluster, prefix, client string }

type targetKey struct{}

// ServeHTTP proxies a request for /clusters/{name}/… (the mux's pattern)
// into the cluster's tunnel, the prefix removed.
func (p *Plane) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p.ServeCluster(w, r, name, api.ClusterProxyPrefix+name, Caller{})
}

// ClusterOf returns the cluster a request is for, once ServeCluster has it.
func ClusterOf(r *http.Request) string {
	t, _ := r.Context().Value(targetKey{}).(target)
	return t.cluster
}

// ServeCluster proxies kubectl's request into the tunnel of cluster name,
// with prefix (empty, or /clusters/<name>: its first two path segments as the
// client escaped them) removed from the path. Nothing is
// looked up here: the proxy's dialer finds the cluster's pool when it needs a
// new connection, and only when there is no tunnel does proxyError consult the
// store to tell an unknown cluster (404) from a disconnected one (503).
func (p *Plane) ServeCluster(w http.ResponseWriter, r *http.Request, name, prefix string, c Caller) {
	if !api.ValidClusterName(name) {
		// It could not have been registered; and it becomes the proxy's Host.
		p.reqs.WithLabelValues("404").Inc()
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("cluster %q is not registered with this relay (cluster names are lowercase DNS labels)", name))
		return
	}
	p.mu.Lock()
	if p.draining && p.cfg.Fleet != nil && !c.Forwarded {
		// Draining, one replica of a fleet: the cluster's agents are
		// moving their tunnels to other replicas; send the request there.
		// (Not counted in inflight, which Shutdown is waiting on: the HTTP
		// server's own shutdown waits for this handler.)
		p.mu.Unlock()
		if p.cfg.Fleet.Forward(w, r, name, prefix, c) {
			return
		}
		p.mu.Lock()
	}
	if p.draining {
		p.mu.Unlock()
		p.reqs.WithLabelValues("503").Inc()
		w.Header().Set("Retry-After", fmt.Sprint(BusyRetryAfter))
		apistatus.Write(w, http.StatusServiceUnavailable, api.ReasonClusterBusy, "relay is shutting down: retry, and the load balancer sends you to another relay")
		return
	}
	p.inflight.Add(1)
	pl := p.pools[name]
	p.mu.Unlock()
	defer p.inflight.Done()
	if p.cfg.Fleet != nil && (pl == nil || pl.Len() == 0) && !c.Forwarded {
		// No tunnel here: an owner elsewhere in the fleet serves it.
		if p.cfg.Fleet.Forward(w, r, name, prefix, c) {
			return
		}
	}
	r = r.WithContext(context.WithValue(r.Context(), targetKey{}, target{cluster: name, prefix: prefix, client: c.Client}))
	p.proxy.ServeHTTP(w, r)
	if p.drainingTunnels.Load() > 0 {
		// The connection this request used may belong to a draining
		// tunnel and has just gone idle.
		p.tr.CloseIdleConnections()
	}
}

func notConnected(name string) string {
	return fmt.Sprintf("cluster %s is not connected: no agent tunnel is up; check that the clusterconnect agent runs in the cluster and can reach the relay", name)
}

func (p *Plane) rewrite(pr *httputil.ProxyRequest) {
	t, _ := pr.In.Context().Value(targetKey{}).(target)
	name := t.cluster
	rest := pr.In.URL.EscapedPath()
	if t.prefix != "" {
		// Drop /clusters/<name> as the client wrote it: the name may be
		// percent-encoded (/clusters/pro%64/api), so the decoded prefix
		// need not appear in the escaped path.
		after, _ := strings.CutPrefix(rest, api.ClusterProxyPrefix)
		rest = ""
		if i := strings.IndexByte(after, '/'); i >= 0 {
			rest = after[i:]
		}
	}
	if rest == "" {
		rest = "/"
	}
	path, err := url.PathUnescape(rest)
	if err != nil {
		path = rest
	}
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = name
	pr.Out.URL.Path = path
	pr.Out.URL.RawPath = rest
	pr.Out.Host = name
	// The apiserver's audit log records the real client: the address the
	// relay saw (or, for a request another replica forwarded, the address
	// that replica saw), never a value the client sent (Rewrite has removed
	// those).
	pr.SetXForwarded()
	if t.client != "" {
		pr.Out.Header.Set("X-Forwarded-For", t.client)
	}
	pr.Out.Header.Del(api.HeaderForwardedPrincipal)
	pr.Out.Header.Del(api.HeaderForwardedClient)
	pr.Out.Header.Del("X-Forwarded-Host")
	pr.Out.Header.Del("X-Forwarded-Proto")
}

// dialCluster is the proxy transport's dialer: the "host" is a cluster name.
func (p *Plane) dialCluster(ctx context.Context, _, addr string) (net.Conn, error) {
	name, _, err := net.SplitHostPort(addr)
	if err != nil {
		name = addr
	}
	pl := p.pool(name, false)
	if pl == nil {
		return nil, tunnel.ErrNoTunnel
	}
	// One round trip, not two: the request goes out with the stream's
	// header, and the agent's refusal, if any, comes out of the
	// transport's read of the response (proxyError maps it as before).
	return pl.OpenEarly(ctx, api.KubeTarget)
}

// busy reports whether a Pool.Open error means that tunnels are up but every
// one refused the stream (too many streams, or draining), rather than that
// there is no tunnel at all.
func busy(err error) bool {
	var se *tunnel.StreamError
	return errors.Is(err, tunnel.ErrTooManyStreams) || errors.Is(err, tunnel.ErrSessionClosed) ||
		(errors.As(err, &se) && (se.Code == tunnel.CodeTooManyStreams || se.Code == tunnel.CodeShuttingDown))
}

func (p *Plane) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	name := ClusterOf(r)
	if r.Context().Err() != nil {
		// The client went away; there is nobody to answer.
		p.reqs.WithLabelValues("499").Inc()
		return
	}
	code, reason, msg := http.StatusBadGateway, apistatus.Reason(http.StatusBadGateway), fmt.Sprintf("request to cluster %s failed in its tunnel: %v", name, err)
	var se *tunnel.StreamError
	var ne net.Error
	switch {
	case errors.Is(err, tunnel.ErrNoTunnel) && busy(err):
		code, reason = http.StatusServiceUnavailable, api.ReasonClusterBusy
		msg = fmt.Sprintf("cluster %s is busy: every agent tunnel refused a new stream (%v); retry in a moment", name, err)
		w.Header().Set("Retry-After", fmt.Sprint(BusyRetryAfter))
	case errors.Is(err, tunnel.ErrNoTunnel):
		code, reason, msg = http.StatusServiceUnavailable, apistatus.Reason(http.StatusServiceUnavailable), notConnected(name)
		if ok, rerr := p.cfg.Registered(r.Context(), name); rerr == nil && !ok {
			code, reason, msg = http.StatusNotFound, apistatus.Reason(http.StatusNotFound), fmt.Sprintf("cluster %q is not registered with this relay", name)
		}
	case errors.As(err, &se) && se.Code == tunnel.CodeDialFailed:
		msg = fmt.Sprintf("the agent of cluster %s could not reach the Kubernetes API server: %s", name, se.Message)
	case errors.As(err, &se):
		msg = fmt.Sprintf("the agent of cluster %s refused the request: %s: %s", name, se.Code, se.Message)
	case errors.As(err, &ne) && ne.Timeout():
		code, reason, msg = http.StatusGatewayTimeout, apistatus.Reason(http.StatusGatewayTimeout), fmt.Sprintf("the agent of cluster %s did not answer in time: %v", name, err)
	}
	if code != http.StatusNotFound {
		p.log.Warn("proxy error", "cluster", name, "path", r.URL.Path, "code", code, "err", err)
	}
	p.reqs.WithLabelValues(fmt.Sprint(code)).Inc()
	apistatus.Write(w, code, reason, msg)
}

// Shutdown drains: new requests are refused at once, requests in flight
// (upgrades included) may finish until ctx is done, then the idle proxy
// connections — each an open stream — are closed and every tunnel is drained
// and closed. Agents reconnect to another relay, or to this one when it is
// back. It returns as soon as nothing is in flight.
func (p *Plane) Shutdown(ctx context.Context) error {
	p.stopOnce.Do(func() { close(p.shutdown) })
	p.mu.Lock()
	p.draining = true
	pools := make([]*tunnel.Pool, 0, len(p.pools))
	for _, pl := range p.pools {
		pools = append(pools, pl)
	}
	p.mu.Unlock()
	// New requests are refused from here on; idle keep-alive connections
	// would otherwise hold their streams open until the deadline.
	p.tr.CloseIdleConnections()
	var early sync.WaitGroup
	var earlyErrs []error
	var earlyMu sync.Mutex
	if p.cfg.Fleet != nil {
		// In a fleet the agents move at once: the other replicas stop
		// forwarding here, every tunnel gets its go-away now (agents connect
		// elsewhere while the streams in flight finish here).
		p.cfg.Fleet.Release()
		for _, pl := range pools {
			early.Go(func() {
				if err := pl.Shutdown(ctx); err != nil {
					earlyMu.Lock()
					earlyErrs = append(earlyErrs, err)
					earlyMu.Unlock()
				}
			})
		}
		pools = nil
	}
	done := make(chan struct{})
	go func() { p.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	p.tr.CloseIdleConnections()
	var errs []error
	for _, pl := range pools {
		errs = append(errs, pl.Shutdown(ctx))
	}
	early.Wait()
	errs = append(errs, earlyErrs...)
	p.agents.Wait()
	return errors.Join(errs...)
}
