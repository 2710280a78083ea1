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
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config says what to serve where. Server and Listen are required; every
// other zero value means the documented default.
type Config struct {
	// Server is the main server; its TLSConfig holds the certificate
	// (Certificates or GetCertificate).
	Server *http.Server
	// Listen is the main server's address.
	Listen string
	// HealthListen is the plain health and metrics address; empty: none.
	HealthListen string
	// Registry is served at /metrics on HealthListen; nil means the Go
	// runtime and process metrics of NewRegistry.
	Registry *prometheus.Registry
	// ShutdownTimeout bounds the drain once the context ends; zero means
	// no drain: connections are closed at once.
	ShutdownTimeout time.Duration
	// OnShutdown, if not nil, is called once the context ends, at the same
	// time as the servers start their graceful shutdown (listeners closed,
	// idle connections closed, in-flight requests finishing), with a
	// context that ends after ShutdownTimeout. Components drain what the
	// servers do not track through it (the relay's tunnels). Run waits for
	// it, so it must return once its context is done; its error is
	// returned by Run. It is not called when a server fails.
	OnShutdown func(ctx context.Context) error
	// Name names the component in the log lines about shutting down;
	// empty means "server".
	Name string
	// Logger receives the shutdown lines; nil discards.
	Logger *slog.Logger
}

// NewRegistry returns a registry with the Go runtime and process
// collectors, which every component shows at /metrics beside its own.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Run listens, calls started with the bound addresses (health is "" when
// off), and serves until ctx ends or a server fails. Then the servers shut
// down gracefully, and OnShutdown drains what they do not track, both
// within ShutdownTimeout; servers still busy after it are closed.
func Run(ctx context.Context, c Config, started func(addr, health string)) error {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := c.Name
	if name == "" {
		name = "server"
	}
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
		reg := c.Registry
		if reg == nil {
			reg = NewRegistry()
		}
		mux := http.NewServeMux()
		ok := func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }
		mux.HandleFunc("GET /healthz", ok)
		mux.HandleFunc("GET /readyz", ok)
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
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
	log.Info(name+" shutting down: draining requests", "timeout", c.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.ShutdownTimeout)
	defer cancel()
	hook := make(chan error, 1)
	if c.OnShutdown != nil {
		go func() { hook <- c.OnShutdown(sctx) }()
	} else {
		hook <- nil
	}
	var errs []error
	for _, s := range servers {
		if err := s.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
			s.Close()
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	if err := <-hook; err != nil {
		errs = append(errs, fmt.Errorf("%s shutdown hook: %w", name, err))
	}
	log.Info(name + " stopped")
	return errors.Join(errs...)
}
