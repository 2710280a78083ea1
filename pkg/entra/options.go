package entra

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/cliflag"
)

// Options are the token-verification settings as command-line flags, one
// set for every command that verifies Entra tokens (kube-aad-proxy, guard).
type Options struct {
	// IssuerURL is the base of v2 issuers and of discovery; V1IssuerURL the
	// base of v1 issuers.
	IssuerURL, V1IssuerURL string
	// IssuerCAFile is a CA bundle trusted for the issuer besides the system
	// roots (local issuers in tests).
	IssuerCAFile string
	// Tenants and Audiences: see Config.
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
}

// DefaultOptions returns Entra's issuers and the package defaults.
func DefaultOptions() Options {
	return Options{
		IssuerURL:      DefaultIssuerURL,
		V1IssuerURL:    DefaultV1IssuerURL,
		Algorithms:     append([]string(nil), DefaultAlgorithms...),
		ClockSkew:      DefaultClockSkew,
		JWKSMinRefresh: DefaultMinRefreshInterval,
		UsernameClaims: append([]string(nil), DefaultUsernameClaims...),
	}
}

// Flags registers the options on fs.
func (o *Options) Flags(fs *flag.FlagSet) {
	fs.StringVar(&o.IssuerURL, "issuer-url", o.IssuerURL, "base URL of v2 issuers (<url>/<tenant>/v2.0) and of discovery")
	fs.StringVar(&o.V1IssuerURL, "v1-issuer-url", o.V1IssuerURL, "base URL of v1 issuers (<url>/<tenant>/)")
	fs.StringVar(&o.IssuerCAFile, "issuer-ca-file", o.IssuerCAFile, "CA bundle to trust for the issuer (and Graph), besides the system roots")
	fs.Var(&cliflag.StringList{Dst: &o.Tenants}, "tenant", "accepted tenant ID (repeatable or comma-separated; required)")
	fs.Var(&cliflag.StringList{Dst: &o.Audiences}, "audience", "accepted audience: the server app's client ID or App ID URI (repeatable or comma-separated; required)")
	fs.Var(&cliflag.StringList{Dst: &o.Algorithms}, "signing-algs", "accepted signature algorithms (none and HMAC are always refused)")
	fs.DurationVar(&o.ClockSkew, "clock-skew", o.ClockSkew, "allowed clock skew on exp and nbf")
	fs.DurationVar(&o.JWKSMinRefresh, "jwks-min-refresh-interval", o.JWKSMinRefresh, "least time between two JWKS fetches of one issuer (a token with an unknown key ID within it of the last fetch is refused at once)")
	fs.Var(&cliflag.StringList{Dst: &o.UsernameClaims}, "username-claim", "claims tried in order for the Kubernetes user name")
	fs.StringVar(&o.UsernamePrefix, "username-prefix", o.UsernamePrefix, "prefix for mapped user names")
	fs.StringVar(&o.GroupsPrefix, "groups-prefix", o.GroupsPrefix, "prefix for mapped groups")
}

// Validate reports what cannot work; hint is added to the messages about
// missing tenants and audiences (e.g. how to do without them).
func (o *Options) Validate(hint string) []error {
	var errs []error
	for name, u := range map[string]string{"--issuer-url": o.IssuerURL, "--v1-issuer-url": o.V1IssuerURL} {
		if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" {
			errs = append(errs, fmt.Errorf("%s %q: want an https:// URL", name, u))
		}
	}
	if len(o.Tenants) == 0 {
		errs = append(errs, errors.New("--tenant is required: the Entra tenant ID(s) whose tokens are accepted"+hint))
	}
	if len(o.Audiences) == 0 {
		errs = append(errs, errors.New("--audience is required: the server application's client ID and/or App ID URI"+hint))
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
	return errs
}

// Config returns the verifier configuration of these options; the caller
// adds what is not a flag (Groups, HTTPClient, Metrics, Logger).
func (o *Options) Config() *Config {
	return &Config{
		IssuerURL:          o.IssuerURL,
		V1IssuerURL:        o.V1IssuerURL,
		Tenants:            o.Tenants,
		Audiences:          o.Audiences,
		Algorithms:         o.Algorithms,
		ClockSkew:          o.ClockSkew,
		UsernameClaims:     o.UsernameClaims,
		UsernamePrefix:     o.UsernamePrefix,
		GroupsPrefix:       o.GroupsPrefix,
		MinRefreshInterval: o.JWKSMinRefresh,
	}
}
