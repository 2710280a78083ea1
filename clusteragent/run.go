package clusteragent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clusterconnect/clusterconnect/clusteragent/connect"
	"github.com/clusterconnect/clusterconnect/clusteragent/heartbeat"
	"github.com/clusterconnect/clusterconnect/clusteragent/identity"
	"github.com/clusterconnect/clusterconnect/clusteragent/metadata"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/pkg/version"
)

// Run runs the roles until ctx is done, then drains them. ready, if not nil,
// is called with the health listener's address.
//
// The health listener comes up first: /healthz answers as long as the
// process runs (a liveness probe must not restart an agent that waits for
// its identity or the relay), /readyz once the roles can do their work (the
// identity is there and, with the connect role, a tunnel is up).
func Run(ctx context.Context, o *Options, log *slog.Logger, ready func(addr string)) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var cs *kubernetes.Clientset
	if o.needsKube() {
		var err error
		if cs, err = kubeClient(o); err != nil {
			return err
		}
	}
	var (
		idReady atomic.Bool
		agent   atomic.Pointer[connect.Agent]
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		switch a := agent.Load(); {
		case !idReady.Load():
			http.Error(w, "waiting for the cluster identity", http.StatusServiceUnavailable)
		case a != nil:
			a.Healthz(w, r)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.Listen, err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// The health server failing stops the agent: its probes would fail
	// anyway, and the error says why.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("health server failed; stopping", "err", err)
			stop(fmt.Errorf("health server on %s: %w", ln.Addr(), err))
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		<-healthDone
	}()
	if err := runRoles(ctx, o, log, cs, reg, &idReady, &agent, ln.Addr().String(), ready); err != nil {
		return err
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("clusteragent stopped")
	return nil
}

// runRoles gets the identity, then runs the roles until ctx is done.
func runRoles(ctx context.Context, o *Options, log *slog.Logger, cs *kubernetes.Clientset, reg *prometheus.Registry,
	idReady *atomic.Bool, agentp *atomic.Pointer[connect.Agent], health string, ready func(addr string)) error {
	var (
		id     *identity.Identity
		follow func(context.Context)
		err    error
	)
	idLog := log.With("role", "identity")
	if o.runsIdentity() {
		if id, err = startIdentity(ctx, o, cs, idLog); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while waiting: not a failure
			}
			return err
		}
		follow = id.Run
	} else {
		if id, err = identity.NewMounted(identity.MountedConfig{Dir: o.IdentityDir, Cluster: o.Cluster, RelayCAFile: o.RelayCAFile, Logger: idLog}); err != nil {
			return err
		}
		if err := id.WaitMounted(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		follow = id.FollowMounted
	}
	idReady.Store(true)
	var agent *connect.Agent
	if o.has("connect") {
		targets := map[string]connect.Upstream{"kube": {URL: o.Upstream, CAFile: o.UpstreamCAFile}}
		for name, u := range o.Allow {
			targets[name] = connect.Upstream{URL: u}
		}
		agent, err = connect.New(connect.Config{
			RelayURL:  o.RelayURL,
			Cluster:   o.Cluster,
			TLSConfig: id.TLSConfig(),
			Tunnels:   o.Tunnels,
			Targets:   targets,
			Tunnel: &tunnel.Config{
				StreamWindow:      uint32(o.StreamWindow),
				MaxStreams:        o.MaxStreams,
				KeepAliveInterval: o.KeepAliveInterval,
				KeepAliveTimeout:  o.KeepAliveTimeout,
			},
			DrainTimeout: o.DrainTimeout,
			Backoff:      tunnel.Backoff{Min: o.BackoffMin, Max: o.BackoffMax},
			Registry:     reg,
			Logger:       log.With("role", "connect"),
		})
		if err != nil {
			return err
		}
		agentp.Store(agent)
	}
	log.Info("clusteragent started", "cluster", o.Cluster, "roles", strings.Join(o.Roles, ","), "identity", identitySource(o),
		"relay", o.RelayURL, "upstream", o.Upstream, "tunnels", o.Tunnels, "health", health)
	if ready != nil {
		ready(health)
	}
	var wg sync.WaitGroup
	wg.Go(func() { follow(ctx) })
	if o.has("sync") {
		// The roles the agent chart deployed beside this one report their
		// health through this one (none when run outside the chart).
		collector := &metadata.Collector{Client: cs, AgentVersion: version.Get(), Namespace: o.Namespace}
		hb := heartbeat.New(heartbeat.Config{
			RelayURL: o.RelayURL,
			Client:   id.HTTPClient(),
			Collect:  collector.Collect,
			Interval: o.HeartbeatInterval,
			Logger:   log.With("role", "sync"),
		})
		wg.Go(func() { hb.Run(ctx) })
	}
	if agent != nil {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-id.Rotated():
					log.Info("certificate rotated; moving the tunnels to it", "not_after", id.NotAfter())
					agent.Refresh()
				}
			}
		})
		agent.Run(ctx)
	} else {
		<-ctx.Done()
	}
	wg.Wait()
	return nil
}

func identitySource(o *Options) string {
	if o.runsIdentity() {
		return "secret " + o.Namespace + "/" + o.IdentitySecret
	}
	return "mounted " + o.IdentityDir
}

// startIdentity loads the cluster identity from its Secret, or enrols with
// the registration token. It retries with backoff until it succeeds or ctx
// ends (the relay may be down, or an operator may still be putting a new
// token in place), logging once per change of error.
func startIdentity(ctx context.Context, o *Options, cs kubernetes.Interface, log *slog.Logger) (*identity.Identity, error) {
	id, err := identity.New(identity.Config{
		RelayURL:              o.RelayURL,
		Cluster:               o.Cluster,
		RegistrationTokenFile: o.RegistrationTokenFile,
		RelayCAFile:           o.RelayCAFile,
		Client:                cs,
		Namespace:             o.Namespace,
		SecretName:            o.IdentitySecret,
		Logger:                log,
	})
	if err != nil {
		return nil, err
	}
	backoff := tunnel.Backoff{Min: o.BackoffMin, Max: 4 * o.BackoffMax}
	var last string
	for attempt := 0; ; attempt++ {
		err := id.Ensure(ctx)
		if err == nil {
			log.Info("cluster identity ready", "cluster", o.Cluster, "not_after", id.NotAfter())
			return id, nil
		}
		if msg := err.Error(); msg != last {
			log.Error("cluster identity not available; retrying", "err", err)
			last = msg
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster identity: %w", err)
		case <-time.After(backoff.Delay(attempt)):
		}
	}
}

// kubeClient is the agent's own API access (in-cluster, or --kubeconfig).
func kubeClient(o *Options) (*kubernetes.Clientset, error) {
	var rc *rest.Config
	var err error
	if o.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for the agent (set --kubeconfig outside a cluster): %w", err)
	}
	rc.UserAgent = "clusterconnect-agent/" + version.Get()
	return kubernetes.NewForConfig(rc)
}
