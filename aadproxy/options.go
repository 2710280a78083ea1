package aadproxy

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/clusterconnect/clusterconnect/aadproxy/graph"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/pkg/logging"
)

// Options are the kube-aad-proxy command's settings. Start from NewOptions.
type Options struct {
	// Listen is the HTTPS address the agent (and other clients) connect to.
	Listen string
	// HealthListen serves /healthz, /readyz and /metrics over plain HTTP;
	// empty disables it.
	HealthListen string
	// TLSCertFile and TLSKeyFile are the serving certificate and key,
	// reloaded when they change.
	TLSCertFile, TLSKeyFile string
	// Kubeconfig is the proxy's own credentials for the apiserver; empty
	// means the in-cluster service account.
	Kubeconfig string

	// Token are the token-verification settings (issuers, tenants,
	// audiences, claims), shared with guard.
	Token entra.Options

	// GraphURL is the Graph-style endpoint for groups overage; ClientID and
	// ClientSecretFile the application credentials for it. Overage is
	// resolved only when both are set; otherwise overage tokens get 401.
	GraphURL, ClientID, ClientSecretFile string
	// GroupsCacheTTL is how long resolved groups are reused per user.
	GroupsCacheTTL time.Duration

	// ShutdownTimeout bounds the drain of requests on SIGTERM.
	ShutdownTimeout time.Duration
	Log             logging.Options
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		Listen:          ":8443",
		HealthListen:    ":8081",
		Token:           entra.DefaultOptions(),
		GraphURL:        graph.DefaultGraphURL,
		GroupsCacheTTL:  graph.DefaultCacheTTL,
		ShutdownTimeout: 15 * time.Second,
		Log:             logging.Defaults(),
	}
}

// Flags registers the options on fs.
func (o *Options) Flags(fs *flag.FlagSet) {
	fs.StringVar(&o.Listen, "listen", o.Listen, "HTTPS listen address (h2 and http/1.1; the clusterconnect agent's --upstream points here)")
	fs.StringVar(&o.HealthListen, "health-listen", o.HealthListen, "plain HTTP address for /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "serving certificate (PEM; reloaded when it changes)")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", o.TLSKeyFile, "serving key (PEM)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig with the proxy's own credentials (default: in-cluster service account)")
	o.Token.Flags(fs)
	fs.StringVar(&o.GraphURL, "graph-url", o.GraphURL, "Graph-style endpoint for groups overage (POST <url>/v1.0/users/<oid>/getMemberObjects)")
	fs.StringVar(&o.ClientID, "client-id", o.ClientID, "application (client) ID for Graph calls on groups overage")
	fs.StringVar(&o.ClientSecretFile, "client-secret-file", o.ClientSecretFile, "file holding the application's client secret for Graph calls")
	fs.DurationVar(&o.GroupsCacheTTL, "groups-cache-ttl", o.GroupsCacheTTL, "how long groups resolved on overage are cached per user")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "how long in-flight requests may finish on SIGTERM")
	o.Log.Flags(fs)
}

// Logger returns the logger --log-level and --log-format select, writing
// to w.
func (o *Options) Logger(w io.Writer) *slog.Logger { return o.Log.New(w) }

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: want host:port: %w", o.Listen, err))
	}
	if o.HealthListen != "" {
		if _, _, err := net.SplitHostPort(o.HealthListen); err != nil {
			errs = append(errs, fmt.Errorf("--health-listen %q: want host:port: %w", o.HealthListen, err))
		}
	}
	if o.TLSCertFile == "" || o.TLSKeyFile == "" {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required (the agent dials the proxy over TLS)"))
	}
	errs = append(errs, o.Token.Validate("")...)
	if pu, err := url.Parse(o.GraphURL); err != nil || pu.Scheme != "https" || pu.Host == "" {
		errs = append(errs, fmt.Errorf("--graph-url %q: want an https:// URL", o.GraphURL))
	}
	if (o.ClientID == "") != (o.ClientSecretFile == "") {
		errs = append(errs, errors.New("--client-id and --client-secret-file go together (both enable groups overage resolution)"))
	}
	if o.GroupsCacheTTL <= 0 {
		errs = append(errs, fmt.Errorf("--groups-cache-ttl %s: want more than 0", o.GroupsCacheTTL))
	}
	if o.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %s: want 0 or more", o.ShutdownTimeout))
	}
	if err := o.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
