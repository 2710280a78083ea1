package aadproxy

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/aadproxy/graph"
	"github.com/clusterconnect/clusterconnect/aadproxy/token"
	"github.com/clusterconnect/clusterconnect/pkg/logging"
)

// Options are the kube-aad-proxy command's settings. Start from NewOptions.
type Options struct {
	// Listen is the HTTPS address the agent (and other clients) connect to.
	Listen string
	// HealthListen serves /healthz, /readyz and /metrics over plain HTTP;
	// empty disables it.
	HealthListen string
	// TLSCertFile and TLSKeyFile are the serving certificate and key.
	TLSCertFile, TLSKeyFile string
	// Kubeconfig is the proxy's own credentials for the apiserver; empty
	// means the in-cluster service account.
	Kubeconfig string

	// IssuerURL is the base of v2 issuers and of discovery
	// (https://login.microsoftonline.com); V1IssuerURL the base of v1
	// issuers (https://sts.windows.net).
	IssuerURL, V1IssuerURL string
	// IssuerCAFile is a CA bundle trusted for the issuer and Graph besides
	// the system roots (local issuers in tests).
	IssuerCAFile string
	// Tenants and Audiences are required; see token.Config.
	Tenants, Audiences []string
	// Algorithms are the accepted signature algorithms.
	Algorithms []string
	// ClockSkew is allowed on exp and nbf.
	ClockSkew time.Duration
	// JWKSMinRefresh is the least time between two JWKS fetches per issuer.
	JWKSMinRefresh time.Duration
	// UsernameClaims are tried in order for the user name.
	UsernameClaims []string
	// UsernamePrefix and GroupsPrefix are prepended to names and groups.
	UsernamePrefix, GroupsPrefix string

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
		IssuerURL:       token.DefaultIssuerURL,
		V1IssuerURL:     token.DefaultV1IssuerURL,
		Algorithms:      append([]string(nil), token.DefaultAlgorithms...),
		ClockSkew:       token.DefaultClockSkew,
		JWKSMinRefresh:  token.DefaultMinRefreshInterval,
		UsernameClaims:  append([]string(nil), token.DefaultUsernameClaims...),
		GraphURL:        graph.DefaultGraphURL,
		GroupsCacheTTL:  graph.DefaultCacheTTL,
		ShutdownTimeout: 15 * time.Second,
		Log:             logging.Defaults(),
	}
}

// listFlag is a repeatable, comma-splitting string list flag whose first
// use replaces the default.
type listFlag struct {
	dst *[]string
	set bool
}

func (l *listFlag) String() string {
	if l == nil || l.dst == nil {
		return ""
	}
	return strings.Join(*l.dst, ",")
}

func (l *listFlag) Set(v string) error {
	if !l.set {
		*l.dst, l.set = nil, true
	}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l.dst = append(*l.dst, s)
		}
	}
	return nil
}

// Flags registers the options on fs.
func (o *Options) Flags(fs *flag.FlagSet) {
	fs.StringVar(&o.Listen, "listen", o.Listen, "HTTPS listen address (h2 and http/1.1; the clusterconnect agent's --upstream points here)")
	fs.StringVar(&o.HealthListen, "health-listen", o.HealthListen, "plain HTTP address for /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "serving certificate (PEM)")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", o.TLSKeyFile, "serving key (PEM)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig with the proxy's own credentials (default: in-cluster service account)")
	fs.StringVar(&o.IssuerURL, "issuer-url", o.IssuerURL, "base URL of v2 issuers (<url>/<tenant>/v2.0) and of discovery")
	fs.StringVar(&o.V1IssuerURL, "v1-issuer-url", o.V1IssuerURL, "base URL of v1 issuers (<url>/<tenant>/)")
	fs.StringVar(&o.IssuerCAFile, "issuer-ca-file", o.IssuerCAFile, "CA bundle to trust for the issuer and Graph, besides the system roots")
	fs.Var(&listFlag{dst: &o.Tenants}, "tenant", "accepted tenant ID (repeatable or comma-separated; required)")
	fs.Var(&listFlag{dst: &o.Audiences}, "audience", "accepted audience: the server app's client ID or App ID URI (repeatable or comma-separated; required)")
	fs.Var(&listFlag{dst: &o.Algorithms}, "signing-algs", "accepted signature algorithms (none and HMAC are always refused)")
	fs.DurationVar(&o.ClockSkew, "clock-skew", o.ClockSkew, "allowed clock skew on exp and nbf")
	fs.DurationVar(&o.JWKSMinRefresh, "jwks-min-refresh-interval", o.JWKSMinRefresh, "least time between two JWKS fetches of one issuer (tokens with a new key ID wait for it)")
	fs.Var(&listFlag{dst: &o.UsernameClaims}, "username-claim", "claims tried in order for the Kubernetes user name")
	fs.StringVar(&o.UsernamePrefix, "username-prefix", o.UsernamePrefix, "prefix for mapped user names")
	fs.StringVar(&o.GroupsPrefix, "groups-prefix", o.GroupsPrefix, "prefix for mapped groups")
	fs.StringVar(&o.GraphURL, "graph-url", o.GraphURL, "Graph-style endpoint for groups overage (POST <url>/v1.0/users/<oid>/getMemberObjects)")
	fs.StringVar(&o.ClientID, "client-id", o.ClientID, "application (client) ID for Graph calls on groups overage")
	fs.StringVar(&o.ClientSecretFile, "client-secret-file", o.ClientSecretFile, "file holding the application's client secret for Graph calls")
	fs.DurationVar(&o.GroupsCacheTTL, "groups-cache-ttl", o.GroupsCacheTTL, "how long groups resolved on overage are cached per user")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "how long in-flight requests may finish on SIGTERM")
	o.Log.Flags(fs)
}

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
	for name, u := range map[string]string{"--issuer-url": o.IssuerURL, "--v1-issuer-url": o.V1IssuerURL, "--graph-url": o.GraphURL} {
		if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" {
			errs = append(errs, fmt.Errorf("%s %q: want an https:// URL", name, u))
		}
	}
	if len(o.Tenants) == 0 {
		errs = append(errs, errors.New("--tenant is required: the Entra tenant ID(s) whose tokens are accepted"))
	}
	if len(o.Audiences) == 0 {
		errs = append(errs, errors.New("--audience is required: the server application's client ID and/or App ID URI"))
	}
	if o.ClockSkew < 0 || o.ClockSkew > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--clock-skew %s: want 0 to 10m", o.ClockSkew))
	}
	if o.JWKSMinRefresh <= 0 {
		errs = append(errs, fmt.Errorf("--jwks-min-refresh-interval %s: want more than 0", o.JWKSMinRefresh))
	}
	if len(o.UsernameClaims) == 0 {
		errs = append(errs, errors.New("--username-claim: at least one claim"))
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
