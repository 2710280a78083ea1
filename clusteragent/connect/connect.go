// Package connect is the clusterconnect-agent role: it keeps tunnels to the
// relay and pipes each stream to the upstream its target names on the
// allow-list (by default only "kube": the cluster's API server, or
// kube-aad-proxy in front of it).
package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/trust"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

// Upstream is one allow-list entry: where a stream target goes.
type Upstream struct {
	// URL is https://host:port (TLS to the upstream, verified with CAFile)
	// or tcp://host:port (bytes piped as they are).
	URL string
	// CAFile verifies an https upstream; empty means the system roots.
	CAFile string
	// InsecureSkipVerify skips verification of an https upstream (tests only).
	InsecureSkipVerify bool
}

// Config wires an Agent.
type Config struct {
	// RelayURL is the relay's base URL, e.g. https://relay.example:8443.
	RelayURL string
	// Cluster is this cluster's registered name.
	Cluster string
	// TLSConfig authenticates the agent to the relay with the cluster's
	// certificate (GetClientCertificate, so rotated certificates are used by
	// new connections) and verifies the relay (RootCAs). It comes from the
	// identity role. Nil means RelayCAFile's roots and no client certificate.
	TLSConfig *tls.Config
	// RelayCAFile is a CA bundle to trust for the relay, besides the system
	// roots, when TLSConfig is nil.
	RelayCAFile string
	// Tunnels to keep; zero means 2.
	Tunnels int
	// Targets is the allow-list: target name → upstream.
	Targets map[string]Upstream
	// Tunnel tunes each session; nil means defaults.
	Tunnel *tunnel.Config
	// Backoff between reconnects.
	Backoff tunnel.Backoff
	// DrainTimeout bounds the drain of in-flight streams on shutdown.
	DrainTimeout time.Duration
	// Registry receives metrics; nil means none are registered.
	Registry prometheus.Registerer
	Logger   *slog.Logger
}

// Agent is the clusterconnect-agent.
type Agent struct {
	client *tunnel.Client
	log    *slog.Logger
}

// New checks cfg and returns an Agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Cluster == "" {
		return nil, errors.New("connect: the cluster name is required")
	}
	u, err := url.Parse(cfg.RelayURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "wss") || u.Host == "" {
		return nil, fmt.Errorf("connect: relay URL %q must be https://host[:port]", cfg.RelayURL)
	}
	tlsCfg := cfg.TLSConfig
	if tlsCfg == nil {
		roots, err := trust.Pool(cfg.RelayCAFile)
		if err != nil {
			return nil, fmt.Errorf("connect: relay CA bundle: %w", err)
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots}
	}
	targets := tunnel.Targets{}
	for name, up := range cfg.Targets {
		d, err := dialer(up)
		if err != nil {
			return nil, fmt.Errorf("connect: target %q: %w", name, err)
		}
		targets[name] = d
	}
	tc := cfg.Tunnel.WithLogger(cfg.Logger)
	if cfg.Registry != nil {
		tc = tc.WithMetrics(tunnel.NewMetrics(cfg.Registry, "agent"))
	}
	c, err := tunnel.NewClient(tunnel.ClientOptions{
		URL:     strings.TrimSuffix(cfg.RelayURL, "/") + api.TunnelPath(cfg.Cluster),
		Tunnels: cfg.Tunnels,
		Targets: targets,
		Dial: tunnel.DialOptions{
			TLSConfig: tlsCfg,
			Header:    http.Header{"User-Agent": {"clusterconnect-agent"}},
			Config:    tc,
		},
		Backoff:      cfg.Backoff,
		DrainTimeout: cfg.DrainTimeout,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &Agent{client: c, log: cfg.Logger}, nil
}

// Run keeps the tunnels up until ctx is done, then drains them.
func (a *Agent) Run(ctx context.Context) { a.client.Run(ctx) }

// Refresh reconnects every tunnel (new connections first, old ones drain),
// so that they present a rotated certificate.
func (a *Agent) Refresh() { a.client.Refresh() }

// Connected is the number of tunnels up now.
func (a *Agent) Connected() int { return a.client.Connected() }

// Healthz answers 200 while at least one tunnel is up, 503 otherwise.
func (a *Agent) Healthz(w http.ResponseWriter, _ *http.Request) {
	if n := a.Connected(); n > 0 {
		fmt.Fprintf(w, "ok: %d tunnels up\n", n)
		return
	}
	http.Error(w, "no tunnel to the relay is up", http.StatusServiceUnavailable)
}

func dialer(up Upstream) (tunnel.DialFunc, error) {
	u, err := url.Parse(up.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("upstream %q: want https://host:port or tcp://host:port", up.URL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	nd := &net.Dialer{KeepAlive: 30 * time.Second}
	switch u.Scheme {
	case "tcp":
		return func(ctx context.Context) (net.Conn, error) { return nd.DialContext(ctx, "tcp", addr) }, nil
	case "https":
		roots, err := trust.Pool(up.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream CA: %w", err)
		}
		td := &tls.Dialer{NetDialer: nd, Config: &tls.Config{
			RootCAs:    roots,
			ServerName: u.Hostname(),
			// The relay speaks HTTP/1.1 in each stream (one request at a time,
			// upgrades for exec and port-forward), so the upstream must too.
			NextProtos:         []string{"http/1.1"},
			InsecureSkipVerify: up.InsecureSkipVerify,
			MinVersion:         tls.VersionTLS12,
		}}
		return func(ctx context.Context) (net.Conn, error) { return td.DialContext(ctx, "tcp", addr) }, nil
	default:
		return nil, fmt.Errorf("upstream %q: scheme must be https or tcp", up.URL)
	}
}
