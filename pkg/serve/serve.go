// Package serve runs a component's HTTPS server, and beside it an optional
// plain HTTP server for /healthz, /readyz and /metrics, until the context
// ends; then it drains both. /metrics is served only on the health
// listener, never on the main one. The health answers are fixed texts: no
// internal error reaches them.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultMaxHeaderBytes is the MaxHeaderBytes Run gives servers that left
// it zero, instead of net/http's 1 MiB. Entra access tokens are a few KiB
// and reach about 12 KiB with the 200 groups they carry before overage;
// pkg/entra refuses tokens over 64 KiB. 256 KiB fits such a token several
// times over, plus kubectl's headers and Impersonate-* headers with
// hundreds of groups, while bounding what one connection can make a
// server buffer before any handler runs. It also caps HTTP/2 header lists
// (SETTINGS_MAX_HEADER_LIST_SIZE).
const DefaultMaxHeaderBytes = 256 << 10

// Config says what to serve where. Server and Listen are required; every
// other zero value means the documented default.
type Config struct {
	// Server is the main server; its TLSConfig holds the certificate
	// (Certificates or GetCertificate). A zero MaxHeaderBytes is set to
	// DefaultMaxHeaderBytes.
	Server *http.Server
	// Listen is the main server's address.
	Listen string
	// HealthListen is the plain health and metrics address; empty: none.
	HealthListen string
	// Registry is served at /metrics on HealthListen; nil means the Go
	// runtime and process metrics of NewRegistry. Unused with Health.
	Registry *prometheus.Registry
	// Health, if not nil, serves HealthListen instead of the built-in
	// /healthz and /readyz (which answer a fixed "ok") and /metrics: a
	// component's own checks. Its answers should say "not ready" and keep
	// the reason for the log: the health listener is not authenticated.
	Health http.Handler
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
	if c.Server.MaxHeaderBytes == 0 {
		c.Server.MaxHeaderBytes = DefaultMaxHeaderBytes
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
		handler := c.Health
		if handler == nil {
			reg := c.Registry
			if reg == nil {
				reg = NewRegistry()
			}
			mux := http.NewServeMux()
			ok := func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }
			mux.HandleFunc("GET /healthz", ok)
			mux.HandleFunc("GET /readyz", ok)
			mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			handler = mux
		}
		health := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, MaxHeaderBytes: 64 << 10}
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

// BodyDeadline returns h with a deadline of d for reading each request's
// body, for endpoints that take a small body and do not stream, so that a
// client trickling its body cannot hold a connection and a handler: when
// the deadline passes, the handler's body read fails with an error that
// is a timeout (os.ErrDeadlineExceeded; answer 408, see IsTimeout), and
// on HTTP/1 the server closes the connection after the answer. It replaces
// the server's ReadTimeout for these requests. Once the body has been read
// to its end the deadline no longer matters: net/http clears it for its
// background read of an HTTP/1 connection, and an HTTP/2 stream's applies
// to the body only, so a handler that takes longer than d afterwards keeps
// its request's context. A zero or negative d returns h; so does a writer
// that cannot set deadlines (a test recorder) in effect.
func BodyDeadline(h http.Handler, d time.Duration) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ErrNotSupported (a writer without a connection): serve as is.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		h.ServeHTTP(w, r)
	})
}

// IsTimeout reports whether err, from reading a request body, is a read
// deadline passing (BodyDeadline's, or the server's ReadTimeout).
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
