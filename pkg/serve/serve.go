// Package serve runs a component's HTTPS server, and beside it an optional
// plain HTTP server for /healthz, /readyz and /metrics, until the context
// ends; then it drains both.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config says what to serve where.
type Config struct {
	// Server is the main server; its TLSConfig holds the certificate.
	Server *http.Server
	// Listen is the main server's address.
	Listen string
	// HealthListen is the plain health and metrics address; empty: none.
	HealthListen string
	// Registry is served at /metrics on HealthListen.
	Registry *prometheus.Registry
	// ShutdownTimeout bounds the drain once the context ends.
	ShutdownTimeout time.Duration
	// Name names the component in the log lines about shutting down.
	Name   string
	Logger *slog.Logger
}

// Run listens, calls started with the bound addresses (health is "" when
// off), and serves until ctx ends or a server fails. Connections the servers
// no longer track (hijacked: exec, port-forward) are closed after the drain.
func Run(ctx context.Context, c Config, started func(addr, health string)) error {
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.Listen, err)
	}
	servers := []*http.Server{c.Server}
	errc := make(chan error, 2)
	go func() { errc <- c.Server.ServeTLS(ln, "", "") }()
	healthAddr := ""
	if c.HealthListen != "" {
		hln, err := net.Listen("tcp", c.HealthListen)
		if err != nil {
			c.Server.Close()
			return fmt.Errorf("listen on %s: %w", c.HealthListen, err)
		}
		healthAddr = hln.Addr().String()
		mux := http.NewServeMux()
		ok := func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }
		mux.HandleFunc("GET /healthz", ok)
		mux.HandleFunc("GET /readyz", ok)
		mux.Handle("GET /metrics", promhttp.HandlerFor(c.Registry, promhttp.HandlerOpts{}))
		health := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, health)
		go func() { errc <- health.Serve(hln) }()
	}
	if started != nil {
		started(ln.Addr().String(), healthAddr)
	}
	select {
	case err := <-errc:
		for _, s := range servers {
			s.Close()
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	c.Logger.Info(c.Name+" shutting down: draining requests", "timeout", c.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	var errs []error
	for _, s := range servers {
		if err := s.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
			s.Close()
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	c.Logger.Info(c.Name + " stopped")
	return errors.Join(errs...)
}
