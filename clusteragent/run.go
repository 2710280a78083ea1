package clusteragent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clusterconnect/clusterconnect/clusteragent/connect"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
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
	agent, err := connect.New(connect.Config{
		RelayURL:    o.RelayURL,
		Cluster:     o.Cluster,
		SecretFile:  o.SecretFile,
		RelayCAFile: o.RelayCAFile,
		Tunnels:     o.Tunnels,
		Targets:     targets,
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
	go hs.Serve(ln)
	log.Info("clusteragent started", "cluster", o.Cluster, "relay", o.RelayURL, "upstream", o.Upstream, "tunnels", o.Tunnels, "health", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr().String())
	}
	agent.Run(ctx)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("clusteragent stopped")
	return nil
}
