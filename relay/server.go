package relay

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// KubeTarget is the stream target for a cluster's Kubernetes API; the agent
// maps it to its configured upstream (the apiserver, or kube-aad-proxy).
const KubeTarget = "kube"

// Config wires a Server. Store and AdminToken are required.
type Config struct {
	Store store.Store
	// ExternalURL is how kubectl and agents reach this relay, e.g.
	// https://relay.example:8443; it goes into issued kubeconfigs.
	ExternalURL string
	// CAPEM is the CA bundle clients trust for the relay's serving
	// certificate; it goes into issued kubeconfigs. Empty means the system roots.
	CAPEM []byte
	// AdminToken authenticates the management API (Bearer).
	AdminToken string
	// ClusterCA signs and checks cluster identities. Required.
	ClusterCA *clusterca.CA
	// CertLifetime of cluster certificates; zero means 90 days.
	CertLifetime time.Duration
	// RegistrationTokenTTL is how long a registration token can be used;
	// zero means 1 hour.
	RegistrationTokenTTL time.Duration
	// Agents authenticates tunnel connections. Nil means a CertAuthenticator
	// on ClusterCA.
	Agents AgentAuthenticator
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Location is the relay's region, shown as each cluster's location.
	// Empty means "local".
	Location string
	// OfflineAfter is how long after its last heartbeat a cluster counts as
	// Offline; zero means 15 minutes.
	OfflineAfter time.Duration
	// Tunnel tunes the relay's side of each tunnel. Nil means defaults.
	Tunnel *tunnel.Config
	// Registry receives the relay's metrics and is served at /metrics. Nil
	// means a new registry.
	Registry *prometheus.Registry
	// Logger; nil means discard.
	Logger *slog.Logger
}

// Server is the relay's http.Handler.
type Server struct {
	cfg     Config
	certs   CertAuthenticator
	log     *slog.Logger
	mux     *http.ServeMux
	proxy   *httputil.ReverseProxy
	tr      *http.Transport
	metrics *tunnel.Metrics
	reqs    *prometheus.CounterVec

	mu    sync.Mutex
	pools map[string]*tunnel.Pool

	conns    sync.WaitGroup // agent handlers
	shutdown chan struct{}
	stopOnce sync.Once
	sweeper  sync.WaitGroup
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("relay: a store is required")
	}
	if cfg.AdminToken == "" {
		return nil, errors.New("relay: an admin token is required for the management API")
	}
	if _, err := url.Parse(cfg.ExternalURL); err != nil || !strings.HasPrefix(cfg.ExternalURL, "https://") {
		return nil, fmt.Errorf("relay: external URL %q must be an https:// URL", cfg.ExternalURL)
	}
	if err := cfg.Tunnel.Validate(); err != nil {
		return nil, err
	}
	if cfg.ClusterCA == nil {
		return nil, errors.New("relay: a cluster CA is required")
	}
	if cfg.CertLifetime == 0 {
		cfg.CertLifetime = 90 * 24 * time.Hour
	}
	if cfg.RegistrationTokenTTL == 0 {
		cfg.RegistrationTokenTTL = time.Hour
	}
	if cfg.Location == "" {
		cfg.Location = "local"
	}
	if cfg.OfflineAfter == 0 {
		cfg.OfflineAfter = 15 * time.Minute
	}
	certs := CertAuthenticator{CA: cfg.ClusterCA, Now: cfg.Now}
	if cfg.Agents == nil {
		cfg.Agents = certs
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:      cfg,
		certs:    certs,
		log:      cfg.Logger,
		mux:      http.NewServeMux(),
		pools:    map[string]*tunnel.Pool{},
		shutdown: make(chan struct{}),
		metrics:  tunnel.NewMetrics(cfg.Registry, "relay"),
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "relay", Name: "proxy_requests_total",
			Help: "Requests proxied to clusters, by HTTP status code.",
		}, []string{"code"}),
	}
	cfg.Registry.MustRegister(s.reqs, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.tr = &http.Transport{
		DialContext:           s.dialCluster,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Pass the client's Accept-Encoding through untouched.
		DisableCompression: true,
		WriteBufferSize:    64 << 10,
		ReadBufferSize:     64 << 10,
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite:   s.rewrite,
		Transport: s.tr,
		// Streaming responses (watch, logs -f: no Content-Length) are
		// flushed on every write by ReverseProxy itself; sized responses
		// go out in full buffers rather than one TLS record per write.
		FlushInterval:  0,
		ErrorHandler:   s.proxyError,
		ModifyResponse: func(r *http.Response) error { s.reqs.WithLabelValues(fmt.Sprint(r.StatusCode)).Inc(); return nil },
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	s.routes()
	s.sweeper.Go(s.sweep)
	return s, nil
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /agent/v1/clusters/{name}/tunnel", s.serveAgent)
	s.mux.HandleFunc("POST /agent/v1/enroll", s.enroll)
	s.mux.HandleFunc("POST /agent/v1/renew", s.renew)
	s.mux.HandleFunc("/clusters/{name}", s.serveCluster)
	s.mux.HandleFunc("/clusters/{name}/{path...}", s.serveCluster)
	s.mux.HandleFunc("GET /api/v1/clusters", s.admin(s.listClusters))
	s.mux.HandleFunc("POST /api/v1/clusters", s.admin(s.createCluster))
	s.mux.HandleFunc("GET /api/v1/clusters/{name}", s.admin(s.getCluster))
	s.mux.HandleFunc("DELETE /api/v1/clusters/{name}", s.admin(s.deleteCluster))
	s.mux.HandleFunc("PATCH /api/v1/clusters/{name}", s.admin(s.patchCluster))
	s.mux.HandleFunc("POST /agent/v1/heartbeat", s.heartbeat)
	s.mux.HandleFunc("POST /agent/v1/checkaccess", s.checkAccess)
	s.mux.HandleFunc("GET /api/v1/roledefinitions", s.admin(s.listRoles))
	s.mux.HandleFunc("GET /api/v1/roledefinitions/{name}", s.admin(s.getRole))
	s.mux.HandleFunc("PUT /api/v1/roledefinitions/{name}", s.admin(s.putRole))
	s.mux.HandleFunc("DELETE /api/v1/roledefinitions/{name}", s.admin(s.deleteRole))
	s.mux.HandleFunc("GET /api/v1/roleassignments", s.admin(s.listAssignments))
	s.mux.HandleFunc("POST /api/v1/roleassignments", s.admin(s.createAssignment))
	s.mux.HandleFunc("DELETE /api/v1/roleassignments/{id}", s.admin(s.deleteAssignment))
	s.mux.HandleFunc("POST /api/v1/clusters/{name}/registration-token", s.admin(s.newRegistrationToken))
	s.mux.HandleFunc("GET /api/v1/clusters/{name}/kubeconfig", s.admin(s.kubeconfig))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/agent/") {
			apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("no agent API %s %s on this relay: is the agent newer than the relay?", r.Method, r.URL.Path))
			return
		}
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("no such path %s on the relay: clusters are reached at /clusters/<name>/, the management API is at /api/v1/clusters", r.URL.Path))
	})
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.shutdown:
		apistatus.Error(w, http.StatusServiceUnavailable, "relay is shutting down")
		return
	default:
	}
	if _, err := s.cfg.Store.ListClusters(r.Context()); err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store unavailable: "+err.Error())
		return
	}
	w.Write([]byte("ok\n"))
}

// Connected reports the number of live tunnels of a cluster.
func (s *Server) Connected(name string) int {
	s.mu.Lock()
	p := s.pools[name]
	s.mu.Unlock()
	if p == nil {
		return 0
	}
	return p.Len()
}

func (s *Server) pool(name string, create bool) *tunnel.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pools[name]
	if p == nil && create {
		p = &tunnel.Pool{}
		s.pools[name] = p
	}
	return p
}

// serveAgent accepts an agent's tunnel for the cluster in the path.
func (s *Server) serveAgent(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	log := s.log.With("cluster", name, "tunnel", r.Header.Get(tunnel.HeaderTunnelIndex), "remote", r.RemoteAddr)
	select {
	case <-s.shutdown:
		apistatus.Error(w, http.StatusServiceUnavailable, "relay is shutting down; reconnect later")
		return
	default:
	}
	c, err := s.cfg.Store.GetCluster(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("tunnel refused: cluster not registered")
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("cluster %q is not registered with this relay: register it with `connectctl clusters create %s` and give the agent the registration token it prints", name, name))
		return
	}
	if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "relay store unavailable: "+err.Error())
		return
	}
	expires, err := s.cfg.Agents.AuthenticateAgent(r.Context(), r, c)
	if err != nil {
		s.authFailed(w, name, err)
		return
	}
	tc := s.cfg.Tunnel.WithLogger(log).WithMetrics(s.metrics)
	sess, err := tunnel.Accept(w, r, tc)
	if err != nil {
		log.Warn("tunnel upgrade failed", "err", err)
		return
	}
	s.conns.Add(1)
	defer s.conns.Done()
	p := s.pool(name, true)
	p.Add(sess)
	// A delete that raced with this connect must still win.
	if _, err := s.cfg.Store.GetCluster(context.Background(), name); errors.Is(err, store.ErrNotFound) {
		sess.Close()
	}
	log.Info("agent tunnel connected", "tunnels", p.Len(), "credential_expires", expires)
	// The tunnel lives no longer than the credential it was opened with.
	if !expires.IsZero() {
		t := time.AfterFunc(expires.Sub(s.now()), func() {
			log.Warn("closing tunnel: its certificate expired", "expired", expires)
			sess.Close()
		})
		defer t.Stop()
	}
	<-sess.Done()
	log.Info("agent tunnel closed", "tunnels", p.Len())
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ValidClusterName reports whether name can name a cluster: an RFC 1123 DNS
// label (lowercase letters, digits and '-', at most 63), as Kubernetes names are.
func ValidClusterName(name string) bool { return dnsLabel.MatchString(name) }

// serveCluster proxies kubectl's request into the cluster's tunnel. Nothing
// is looked up here: the proxy's dialer finds the cluster's pool when it needs
// a new connection, and only when there is no tunnel does proxyError consult
// the store to tell an unknown cluster (404) from a disconnected one (503).
func (s *Server) serveCluster(w http.ResponseWriter, r *http.Request) {
	if name := r.PathValue("name"); !ValidClusterName(name) {
		// It could not have been registered; and it becomes the proxy's Host.
		s.reqs.WithLabelValues("404").Inc()
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("cluster %q is not registered with this relay (cluster names are lowercase DNS labels)", name))
		return
	}
	s.proxy.ServeHTTP(w, r)
}

func notConnected(name string) string {
	return fmt.Sprintf("cluster %s is not connected: no agent tunnel is up; check that the clusterconnect agent runs in the cluster and can reach the relay", name)
}

func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	name := pr.In.PathValue("name")
	rest := strings.TrimPrefix(pr.In.URL.EscapedPath(), "/clusters/"+name)
	if rest == "" {
		rest = "/"
	}
	p, err := url.PathUnescape(rest)
	if err != nil {
		p = rest
	}
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = name
	pr.Out.URL.Path = p
	pr.Out.URL.RawPath = rest
	pr.Out.Host = name
}

// dialCluster is the proxy transport's dialer: the "host" is a cluster name.
func (s *Server) dialCluster(ctx context.Context, _, addr string) (net.Conn, error) {
	name, _, err := net.SplitHostPort(addr)
	if err != nil {
		name = addr
	}
	p := s.pool(name, false)
	if p == nil {
		return nil, tunnel.ErrNoTunnel
	}
	return p.Open(ctx, KubeTarget)
}

func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	name := r.PathValue("name")
	if r.Context().Err() != nil {
		// The client went away; there is nobody to answer.
		s.reqs.WithLabelValues("499").Inc()
		return
	}
	code, msg := http.StatusBadGateway, fmt.Sprintf("request to cluster %s failed in its tunnel: %v", name, err)
	var se *tunnel.StreamError
	var ne net.Error
	switch {
	case errors.Is(err, tunnel.ErrNoTunnel):
		code, msg = http.StatusServiceUnavailable, notConnected(name)
		if _, serr := s.cfg.Store.GetCluster(r.Context(), name); errors.Is(serr, store.ErrNotFound) {
			code, msg = http.StatusNotFound, fmt.Sprintf("cluster %q is not registered with this relay", name)
		}
	case errors.As(err, &se) && se.Code == tunnel.CodeDialFailed:
		msg = fmt.Sprintf("the agent of cluster %s could not reach the Kubernetes API server: %s", name, se.Message)
	case errors.As(err, &se):
		msg = fmt.Sprintf("the agent of cluster %s refused the request: %s: %s", name, se.Code, se.Message)
	case errors.As(err, &ne) && ne.Timeout():
		code, msg = http.StatusGatewayTimeout, fmt.Sprintf("the agent of cluster %s did not answer in time: %v", name, err)
	}
	if code != http.StatusNotFound {
		s.log.Warn("proxy error", "cluster", name, "path", r.URL.Path, "code", code, "err", err)
	}
	s.reqs.WithLabelValues(fmt.Sprint(code)).Inc()
	apistatus.Error(w, code, msg)
}

// Shutdown drains every tunnel (streams in flight may finish until ctx is
// done) and closes them; agents reconnect to another relay or to this one
// when it is back.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.shutdown) })
	s.sweeper.Wait()
	s.mu.Lock()
	pools := make([]*tunnel.Pool, 0, len(s.pools))
	for _, p := range s.pools {
		pools = append(pools, p)
	}
	s.mu.Unlock()
	var errs []error
	for _, p := range pools {
		errs = append(errs, p.Shutdown(ctx))
	}
	s.conns.Wait()
	s.tr.CloseIdleConnections()
	return errors.Join(errs...)
}

// admin wraps a management API handler with the admin token check.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t, ok := bearer(r)
		if !ok || !secretMatches(t, hashSecret(s.cfg.AdminToken)) {
			apistatus.Error(w, http.StatusUnauthorized, "the management API needs the relay's admin token as Authorization: Bearer <token> (connectctl reads it from its config or CONNECTCTL_RELAY_TOKEN)")
			return
		}
		h(w, r)
	}
}

// Kubeconfig builds the kubeconfig for a cluster: the relay URL for it, the
// relay's CA, and a context and user named after the cluster. The user entry
// carries no credential; the caller adds theirs (connectctl kubeconfig --token).
func Kubeconfig(externalURL string, caPEM []byte, name string) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cl := clientcmdapi.NewCluster()
	cl.Server = strings.TrimSuffix(externalURL, "/") + "/clusters/" + name
	cl.CertificateAuthorityData = caPEM
	cfg.Clusters[name] = cl
	cfg.AuthInfos[name] = clientcmdapi.NewAuthInfo()
	ctx := clientcmdapi.NewContext()
	ctx.Cluster, ctx.AuthInfo = name, name
	cfg.Contexts[name] = ctx
	cfg.CurrentContext = name
	return cfg
}

func (s *Server) kubeconfig(w http.ResponseWriter, r *http.Request) {
	c, ok := s.lookup(w, r)
	if !ok {
		return
	}
	b, err := clientcmd.Write(*Kubeconfig(s.cfg.ExternalURL, s.cfg.CAPEM, c.Name))
	if err != nil {
		apistatus.Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(b)
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func newUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
