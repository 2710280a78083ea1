package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/pkg/serve"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay/agentapi"
	"github.com/clusterconnect/clusterconnect/relay/audit"
	"github.com/clusterconnect/clusterconnect/relay/authn"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/connectivity"
	"github.com/clusterconnect/clusterconnect/relay/dataplane"
	"github.com/clusterconnect/clusterconnect/relay/frontdoor"
	"github.com/clusterconnect/clusterconnect/relay/limits"
	"github.com/clusterconnect/clusterconnect/relay/mgmtapi"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// Config wires a Server. Store, AdminToken and ClusterCA are required.
type Config struct {
	Store store.Store
	// ExternalURL is how kubectl and agents reach this relay, e.g.
	// https://relay.example:8443; it goes into issued kubeconfigs.
	ExternalURL string
	// CAPEM is the CA bundle clients trust for the relay's serving
	// certificate; it goes into issued kubeconfigs. Empty means the system roots.
	CAPEM []byte
	// AdminToken is the bootstrap credential of the management API (Bearer):
	// an Owner.
	AdminToken string
	// Entra verifies users' Entra ID tokens on the data path and the
	// management API; nil turns Entra sign-in off (then callers reach
	// clusters with relay client certificates only).
	Entra authn.Verifier
	// HostSuffix, when set, names clusters by host <cluster>.<HostSuffix>
	// (TLS server name) besides /clusters/<name>, and issued kubeconfigs use
	// it. The serving certificate must cover *.<HostSuffix>.
	HostSuffix string
	// ClientCertLifetime of relay client certificates; zero means 1 hour.
	ClientCertLifetime time.Duration
	// BodyTimeout bounds reading the body of a non-streaming request
	// (enrolment, renewal, heartbeat, checkAccess, management API): a
	// trickled body gets 408. Zero means 30 s.
	BodyTimeout time.Duration
	// Limits per caller and cluster on the data path; nil means
	// limits.Defaults().
	Limits *limits.Config
	// Audit receives one record per data-path request; nil means a log
	// kept in memory only.
	Audit *audit.Log
	// ClusterCA signs and checks cluster identities. Required.
	ClusterCA *clusterca.CA
	// CertLifetime of cluster certificates; zero means 90 days.
	CertLifetime time.Duration
	// RegistrationTokenTTL is how long a registration token can be used;
	// zero means 1 hour.
	RegistrationTokenTTL time.Duration
	// Agents authenticates tunnel connections. Nil means an
	// agentapi.CertAuthenticator on ClusterCA.
	Agents agentapi.Authenticator
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Location is the relay's region, shown as each cluster's location.
	// Empty means "local".
	Location string
	// OfflineAfter is how long after its last heartbeat a cluster counts as
	// Offline; zero means 15 minutes.
	OfflineAfter time.Duration
	// HeartbeatWriteInterval bounds the store writes of heartbeats per
	// cluster (see agentapi.Config); zero means
	// agentapi.DefaultHeartbeatWriteInterval, or half of OfflineAfter when
	// that is shorter.
	HeartbeatWriteInterval time.Duration
	// Tunnel tunes the relay's side of each tunnel. Nil means defaults.
	Tunnel *tunnel.Config
	// Registry receives the relay's metrics and is served at /metrics. Nil
	// means a new registry.
	Registry *prometheus.Registry
	// Logger; nil means discard.
	Logger *slog.Logger
	// Fleet, when set, makes this relay one replica of a fleet on a shared
	// etcd store (see relay/fleet).
	Fleet dataplane.Fleet
	// Replica is this replica's name in the fleet (told to agents).
	Replica string
}

// Server is the relay's http.Handler: the front door and data plane, the
// agent API and the management API on one mux. Health and metrics are
// served apart by Health.
type Server struct {
	cfg   Config
	mux   *http.ServeMux
	plane *dataplane.Plane
	door  *frontdoor.Door
	ops   *http.ServeMux
	// bounded is mux with a read deadline on request bodies, for the
	// endpoints that take a small body and do not stream.
	bounded http.Handler

	stop      context.CancelFunc // ends the status sweep
	sweeper   sync.WaitGroup
	watcher   sync.WaitGroup // the store watch (a fleet), stopped after the drain
	stopWatch context.CancelFunc
	shutdown  chan struct{}
	stopOnce  sync.Once
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("relay: a store is required")
	}
	if _, err := url.Parse(cfg.ExternalURL); err != nil || !strings.HasPrefix(cfg.ExternalURL, "https://") {
		return nil, fmt.Errorf("relay: external URL %q must be an https:// URL", cfg.ExternalURL)
	}
	if cfg.ClusterCA == nil {
		return nil, errors.New("relay: a cluster CA is required")
	}
	if cfg.OfflineAfter == 0 {
		cfg.OfflineAfter = 15 * time.Minute
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := tunnel.NewMetrics(cfg.Registry, "relay")
	status := &connectivity.Tracker{OfflineAfter: cfg.OfflineAfter, Now: cfg.Now, Log: cfg.Logger}
	plane, err := dataplane.New(dataplane.Config{
		Registered: func(ctx context.Context, name string) (bool, error) {
			_, err := cfg.Store.GetCluster(ctx, name)
			if errors.Is(err, store.ErrNotFound) {
				return false, nil
			}
			return err == nil, err
		},
		Tunnel: cfg.Tunnel, Metrics: metrics, Registry: cfg.Registry, Now: cfg.Now, Logger: cfg.Logger, Fleet: cfg.Fleet, Replica: cfg.Replica,
	})
	if err != nil {
		return nil, err
	}
	agents, err := agentapi.New(agentapi.Config{
		Store: cfg.Store, ClusterCA: cfg.ClusterCA, CAPEM: cfg.CAPEM, CertLifetime: cfg.CertLifetime, Agents: cfg.Agents,
		Plane: plane, Status: status, Metrics: metrics, HeartbeatWriteInterval: cfg.HeartbeatWriteInterval, Now: cfg.Now, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	auth, err := authn.New(authn.Config{Store: cfg.Store, AdminToken: cfg.AdminToken, CA: cfg.ClusterCA, Entra: cfg.Entra, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	if cfg.Audit == nil {
		cfg.Audit = audit.New(audit.Config{Now: cfg.Now})
	}
	lc := limits.Defaults()
	if cfg.Limits != nil {
		lc = *cfg.Limits
	}
	door, err := frontdoor.New(frontdoor.Config{Authn: auth, Store: cfg.Store, Plane: plane, Limits: limits.New(lc, cfg.Registry),
		Audit: cfg.Audit, HostSuffix: cfg.HostSuffix, Now: cfg.Now, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if cfg.AdminToken == "" {
		return nil, errors.New("relay: an admin token is required for the management API")
	}
	mgmt, err := mgmtapi.New(mgmtapi.Config{
		Store: cfg.Store, ExternalURL: cfg.ExternalURL, CAPEM: cfg.CAPEM, HostSuffix: cfg.HostSuffix, Authn: auth,
		ClusterCA: cfg.ClusterCA, ClientCertLifetime: cfg.ClientCertLifetime, Audit: cfg.Audit, Changed: door.Forget,
		RegistrationTokenTTL: cfg.RegistrationTokenTTL, Location: cfg.Location, Plane: plane, Status: status,
		Now: cfg.Now, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), ops: http.NewServeMux(), plane: plane, door: door, shutdown: make(chan struct{})}
	s.mux.Handle(api.ClusterProxyPrefix+"{name}", door)
	s.mux.Handle(api.ClusterProxyPrefix+"{name}/{path...}", door)
	agents.Register(s.mux)
	mgmt.Register(s.mux)
	s.mux.HandleFunc("GET "+api.HealthzPath, func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("/", notFound)
	s.bounded = serve.BodyDeadline(s.mux, cfg.BodyTimeout)
	s.ops.HandleFunc("GET "+api.HealthzPath, func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	s.ops.HandleFunc("GET "+api.ReadyzPath, s.readyz)
	s.ops.Handle("GET "+api.MetricsPath, promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))

	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.sweeper.Go(func() { status.Sweep(ctx, cfg.Store) })
	s.sweeper.Go(func() { s.sweepExpired(ctx) })
	if w, ok := cfg.Store.(store.Watcher); ok {
		// The watch outlives the drain (Shutdown stops it last): a replica
		// draining still learns of deletes and revocations.
		wctx, wcancel := context.WithCancel(context.Background())
		s.stopWatch = wcancel
		s.watcher.Go(func() { w.Watch(wctx, s.changed) })
	}
	return s, nil
}

// changed applies a change another replica made to the shared store (or
// this one: the effects are idempotent): a deleted or re-registered
// cluster's tunnels close here too, and cached admission decisions go, so
// that a new, revoked or expired assignment or token counts at once.
func (s *Server) changed(c store.Change) {
	if c.Kind == store.KindCluster && (c.Deleted || c.Replaced) {
		why := "cluster deleted; its certificates are revoked"
		if !c.Deleted {
			why = "cluster registered again; older certificates are revoked"
		}
		if s.plane.Connected(c.Name) > 0 {
			s.plane.CloseTunnels(c.Name, why)
		}
	}
	if c.Kind != store.KindCluster || c.Deleted || c.Replaced {
		s.door.Forget()
	}
	if c.Kind == store.KindResync {
		// Changes may have gone unseen: close the tunnels of clusters that
		// are gone.
		for _, name := range s.plane.Clusters() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := s.cfg.Store.GetCluster(ctx, name)
			cancel()
			if errors.Is(err, store.ErrNotFound) {
				s.plane.CloseTunnels(name, "cluster deleted (seen on resync)")
			}
		}
	}
}

func notFound(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, api.AgentPrefix) {
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("no agent API %s %s on this relay: is the agent newer than the relay?", r.Method, r.URL.Path))
		return
	}
	apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("no such path %s on the relay: clusters are reached at %s<name>/, the management API is at %s", r.URL.Path, api.ClusterProxyPrefix, api.ClustersPath))
}

// ServeHTTP implements http.Handler: a request whose TLS server name (or
// Host) names a cluster goes to that cluster whatever its path; everything
// else by path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if name, ok := s.door.ClusterByHost(r); ok {
		s.door.ServeHost(w, r, name)
		return
	}
	// The data path and tunnels stream; everything else (enrolment,
	// renewal, heartbeat, checkAccess, the management API) takes a small
	// body that must arrive within Config.BodyTimeout.
	if strings.HasPrefix(r.URL.Path, api.ClusterProxyPrefix) || strings.HasSuffix(r.URL.Path, "/tunnel") {
		s.mux.ServeHTTP(w, r)
		return
	}
	s.bounded.ServeHTTP(w, r)
}

// Health is the handler of the health listener: /healthz, /readyz and
// /metrics, kept off the internet-facing listener.
func (s *Server) Health() http.Handler { return s.ops }

// readyz answers 503 while shutting down or when the store does not
// answer; the reason goes to the log, not to the caller.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.shutdown:
		apistatus.Error(w, http.StatusServiceUnavailable, "relay is shutting down")
		return
	default:
	}
	var err error
	if p, ok := s.cfg.Store.(store.Pinger); ok {
		err = p.Ping(r.Context())
	} else {
		_, err = s.cfg.Store.ListClusters(r.Context())
	}
	if err != nil {
		s.cfg.Logger.Warn("not ready: store unavailable", "err", err)
		apistatus.Error(w, http.StatusServiceUnavailable, "relay not ready: its store is unavailable (see the relay's log)")
		return
	}
	w.Write([]byte("ok\n"))
}

// sweepInterval is how often expired role assignments and API tokens are
// deleted (they stop counting the moment they expire; this only tidies).
const sweepInterval = 30 * time.Second

func (s *Server) sweepExpired(ctx context.Context) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		now := s.cfg.Now()
		if gone, err := s.cfg.Store.DeleteExpiredAssignments(ctx, now); err != nil {
			s.cfg.Logger.Warn("deleting expired role assignments failed", "err", err)
		} else {
			for _, a := range gone {
				s.cfg.Logger.Info("role assignment expired and removed", "id", a.ID, "role", a.Role, "principal", a.PrincipalID, "cluster", a.Cluster, "expired", a.ExpiresAt)
			}
		}
		if n, err := s.cfg.Store.DeleteExpiredTokens(ctx, now); err != nil {
			s.cfg.Logger.Warn("deleting expired API tokens failed", "err", err)
		} else if n > 0 {
			s.cfg.Logger.Info("expired API tokens removed", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Connected reports the number of live tunnels of a cluster.
func (s *Server) Connected(name string) int { return s.plane.Connected(name) }

// Shutdown refuses new requests and tunnels, lets requests in flight finish
// until ctx is done, then drains and closes every tunnel; agents reconnect to
// another relay or to this one when it is back. It returns as soon as nothing
// is in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.shutdown) })
	s.stop()
	// New requests are refused from the first moment; the sweeps (which
	// may be in a store call) are waited for after the drain.
	err := s.plane.Shutdown(ctx)
	s.sweeper.Wait()
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.watcher.Wait()
	return err
}

// ForgetDecisions drops the front door's cached admission decisions (tests;
// the management API does it itself when assignments change).
func (s *Server) ForgetDecisions() { s.door.Forget() }
