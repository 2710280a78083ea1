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
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay/agentapi"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/connectivity"
	"github.com/clusterconnect/clusterconnect/relay/dataplane"
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
	// AdminToken authenticates the management API (Bearer).
	AdminToken string
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
	// Tunnel tunes the relay's side of each tunnel. Nil means defaults.
	Tunnel *tunnel.Config
	// Registry receives the relay's metrics and is served at /metrics. Nil
	// means a new registry.
	Registry *prometheus.Registry
	// Logger; nil means discard.
	Logger *slog.Logger
}

// Server is the relay's http.Handler: the data plane, the agent API and the
// management API on one mux, with health and metrics.
type Server struct {
	cfg   Config
	mux   *http.ServeMux
	plane *dataplane.Plane

	stop     context.CancelFunc // ends the status sweep
	sweeper  sync.WaitGroup
	shutdown chan struct{}
	stopOnce sync.Once
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
		Tunnel: cfg.Tunnel, Metrics: metrics, Registry: cfg.Registry, Now: cfg.Now, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	agents, err := agentapi.New(agentapi.Config{
		Store: cfg.Store, ClusterCA: cfg.ClusterCA, CAPEM: cfg.CAPEM, CertLifetime: cfg.CertLifetime, Agents: cfg.Agents,
		Plane: plane, Status: status, Metrics: metrics, Now: cfg.Now, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	mgmt, err := mgmtapi.New(mgmtapi.Config{
		Store: cfg.Store, ExternalURL: cfg.ExternalURL, CAPEM: cfg.CAPEM, AdminToken: cfg.AdminToken,
		RegistrationTokenTTL: cfg.RegistrationTokenTTL, Location: cfg.Location, Plane: plane, Status: status,
		Now: cfg.Now, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), plane: plane, shutdown: make(chan struct{})}
	s.mux.Handle(api.ClusterProxyPrefix+"{name}", plane)
	s.mux.Handle(api.ClusterProxyPrefix+"{name}/{path...}", plane)
	agents.Register(s.mux)
	mgmt.Register(s.mux)
	s.mux.HandleFunc("GET "+api.HealthzPath, func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET "+api.ReadyzPath, s.readyz)
	s.mux.Handle("GET "+api.MetricsPath, promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("/", notFound)

	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.sweeper.Go(func() { status.Sweep(ctx, cfg.Store) })
	return s, nil
}

func notFound(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, api.AgentPrefix) {
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("no agent API %s %s on this relay: is the agent newer than the relay?", r.Method, r.URL.Path))
		return
	}
	apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("no such path %s on the relay: clusters are reached at %s<name>/, the management API is at %s", r.URL.Path, api.ClusterProxyPrefix, api.ClustersPath))
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
func (s *Server) Connected(name string) int { return s.plane.Connected(name) }

// Shutdown refuses new requests and tunnels, lets requests in flight finish
// until ctx is done, then drains and closes every tunnel; agents reconnect to
// another relay or to this one when it is back. It returns as soon as nothing
// is in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.shutdown) })
	s.stop()
	s.sweeper.Wait()
	return s.plane.Shutdown(ctx)
}
