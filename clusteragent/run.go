package clusteragent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
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
func Run(ctx context.Context, o *Options, log *slog.Logger, ready func(addr string)) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	targets := map[string]connect.Upstream{"kube": {URL: o.Upstream, CAFile: o.UpstreamCAFile}}
	for name, u := range o.Allow {
		targets[name] = connect.Upstream{URL: u}
	}
	cs, err := kubeClient(o)
	if err != nil {
		return err
	}
	id, err := startIdentity(ctx, o, cs, log.With("role", "identity"))
	if err != nil {
		return err
	}
	agent, err := connect.New(connect.Config{
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
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", agent.Healthz)
	mux.HandleFunc("GET /readyz", agent.Healthz)
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
	log.Info("clusteragent started", "cluster", o.Cluster, "relay", o.RelayURL, "upstream", o.Upstream, "tunnels", o.Tunnels, "health", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr().String())
	}
	var wg sync.WaitGroup
	wg.Go(func() { id.Run(ctx) })
	if o.has("sync") {
		collector := &metadata.Collector{Client: cs, AgentVersion: version.Get()}
		hb := heartbeat.New(heartbeat.Config{
			RelayURL: o.RelayURL,
			Client:   id.HTTPClient(),
			Collect:  collector.Collect,
			Interval: o.HeartbeatInterval,
			Logger:   log.With("role", "sync"),
		})
		wg.Go(func() { hb.Run(ctx) })
	}
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
	if o.has("connect") {
		agent.Run(ctx)
	} else {
		<-ctx.Done()
	}
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-healthDone
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("clusteragent stopped")
	return nil
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
