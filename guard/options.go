package guard

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/clusterconnect/clusterconnect/guard/apiserverconfig"
	"github.com/clusterconnect/clusterconnect/guard/authz"
	"github.com/clusterconnect/clusterconnect/guard/cache"
	"github.com/clusterconnect/clusterconnect/guard/checkaccess"
	"github.com/clusterconnect/clusterconnect/pkg/cliflag"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/pkg/logging"
)

// DefaultAllowedPaths are the discovery and health paths every Entra user
// may read without a role assignment (RBAC's system:discovery and
// system:public-info-viewer allow them too; this keeps them working when
// those bindings are changed).
var DefaultAllowedPaths = []string{"/api", "/api/*", "/apis", "/apis/*", "/version", "/healthz", "/livez", "/readyz", "/openapi/*"}

// Options are the guard command's settings. Start from NewOptions.
type Options struct {
	// Listen is the HTTPS address of the webhooks.
	Listen string
	// HealthListen serves /healthz, /readyz and /metrics over plain HTTP;
	// empty disables it.
	HealthListen string
	// TLSCertFile and TLSKeyFile are the serving certificate and key
	// (reloaded when they change); the apiserver verifies them by the CA
	// in the webhook kubeconfig.
	TLSCertFile, TLSKeyFile string
	// WebhookClientCAFile is the CA whose client certificates guard
	// requires on the webhooks: the apiserver's, from the webhook
	// kubeconfigs (`guard config` makes one and writes its CA). Required
	// unless AllowAnonymousWebhookClients.
	WebhookClientCAFile string
	// AllowAnonymousWebhookClients serves the webhooks to any client, with
	// or without a certificate (logged as a warning at start): anyone who
	// reaches Listen could then test tokens against TokenReview and make
	// guard ask the relay, with the cluster's certificate, about any user.
	AllowAnonymousWebhookClients bool

	// Token configures token verification as in kube-aad-proxy (the same
	// flags); Tenants and Audiences are required unless DisableAuthn.
	// Token.GroupsPrefix is also stripped by authz before asking the relay.
	Token entra.Options
	// DisableAuthn turns the TokenReview webhook off (authorization only,
	// e.g. behind kube-aad-proxy).
	DisableAuthn bool

	// RelayURL is the relay's base URL. Required.
	RelayURL string
	// ClientCertFile and ClientKeyFile are the cluster certificate (the
	// identity Secret's tls.crt and tls.key), reloaded when they change.
	ClientCertFile, ClientKeyFile string
	// RelayCAFile is trusted for the relay besides the system roots (the
	// identity Secret's ca.crt).
	RelayCAFile string
	// RelayTimeout bounds one checkAccess call.
	RelayTimeout time.Duration
	// RelayFailureMode answers when the relay cannot: deny or no-opinion.
	RelayFailureMode string
	// RelayBackoff: see AuthorizerConfig.RelayBackoff.
	RelayBackoff time.Duration

	// AllowedTTL and DeniedTTL are how long decisions are cached; CacheSize
	// bounds the entries.
	AllowedTTL, DeniedTTL time.Duration
	CacheSize             int
	// SkipUsers and SkipGroups get no opinion without a check.
	SkipUsers, SkipGroups []string
	// AllowedPaths: non-resource paths every Entra user may get.
	AllowedPaths []string

	// ShutdownTimeout bounds the drain on SIGTERM.
	ShutdownTimeout time.Duration
	Log             logging.Options
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		Listen:           ":8443",
		HealthListen:     ":8081",
		Token:            entra.DefaultOptions(),
		RelayTimeout:     checkaccess.DefaultTimeout,
		RelayFailureMode: string(FailureDeny),
		RelayBackoff:     DefaultRelayBackoff,
		AllowedTTL:       cache.DefaultAllowedTTL,
		DeniedTTL:        cache.DefaultDeniedTTL,
		CacheSize:        cache.DefaultSize,
		AllowedPaths:     append([]string(nil), DefaultAllowedPaths...),
		ShutdownTimeout:  15 * time.Second,
		Log:              logging.Defaults(),
	}
}

// Flags registers the options on fs.
func (o *Options) Flags(fs *flag.FlagSet) {
	fs.StringVar(&o.Listen, "listen", o.Listen, "HTTPS address of the webhooks (POST /tokenreviews, POST /subjectaccessreviews)")
	fs.StringVar(&o.HealthListen, "health-listen", o.HealthListen, "plain HTTP address for /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "serving certificate (PEM; reloaded when it changes)")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", o.TLSKeyFile, "serving key (PEM)")
	fs.StringVar(&o.WebhookClientCAFile, "webhook-client-ca-file", o.WebhookClientCAFile, "CA of the client certificate the webhooks require: the apiserver's (guard config writes "+apiserverconfig.ClientCAFile+"); required unless --allow-anonymous-webhook-clients")
	fs.BoolVar(&o.AllowAnonymousWebhookClients, "allow-anonymous-webhook-clients", o.AllowAnonymousWebhookClients, "serve the webhooks to clients without a verified certificate (not recommended: anyone who reaches --listen may call them)")

	o.Token.Flags(fs)
	fs.BoolVar(&o.DisableAuthn, "disable-authn", o.DisableAuthn, "serve only the authorization webhook")

	fs.StringVar(&o.RelayURL, "relay-url", o.RelayURL, "relay base URL, https://host:port (required)")
	fs.StringVar(&o.ClientCertFile, "client-cert-file", o.ClientCertFile, "cluster certificate for mTLS with the relay: the identity Secret's tls.crt (reloaded when it changes)")
	fs.StringVar(&o.ClientKeyFile, "client-key-file", o.ClientKeyFile, "its key: the identity Secret's tls.key")
	fs.StringVar(&o.RelayCAFile, "relay-ca-file", o.RelayCAFile, "CA bundle to trust for the relay besides the system roots (the identity Secret's ca.crt)")
	fs.DurationVar(&o.RelayTimeout, "relay-timeout", o.RelayTimeout, "timeout of one checkAccess call (keep it under the webhook timeout)")
	fs.StringVar(&o.RelayFailureMode, "relay-failure-mode", o.RelayFailureMode, "answer when the relay cannot and nothing is cached: deny or no-opinion")
	fs.DurationVar(&o.RelayBackoff, "relay-failure-backoff", o.RelayBackoff, "after a failed checkAccess, answer cache misses per --relay-failure-mode without calling the relay for this long (negative: never back off)")

	fs.DurationVar(&o.AllowedTTL, "allowed-ttl", o.AllowedTTL, "how long allowed decisions are cached (negative: not cached)")
	fs.DurationVar(&o.DeniedTTL, "denied-ttl", o.DeniedTTL, "how long denied decisions (and relay 4xx answers) are cached (negative: not cached)")
	fs.IntVar(&o.CacheSize, "cache-size", o.CacheSize, "most decisions cached (least recently used evicted first)")
	fs.Var(&cliflag.StringList{Dst: &o.SkipUsers}, "skip-authz-user", "user names guard has no opinion on, without a check (repeatable or comma-separated)")
	fs.Var(&cliflag.StringList{Dst: &o.SkipGroups}, "skip-authz-group", "groups whose members guard has no opinion on, without a check (repeatable or comma-separated)")
	fs.Var(&cliflag.StringList{Dst: &o.AllowedPaths}, "allow-nonresource-path", "non-resource paths every Entra user may get without a role assignment; a trailing * matches a prefix (repeatable; --allow-nonresource-path= allows none)")

	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "how long in-flight reviews may finish on SIGTERM")
	o.Log.Flags(fs)
}

func checkAddr(name, v string) error {
	if _, _, err := net.SplitHostPort(v); err != nil {
		return fmt.Errorf("%s %q: want host:port: %w", name, v, err)
	}
	return nil
}

// Logger returns the logger --log-level and --log-format select, writing
// to w.
func (o *Options) Logger(w io.Writer) *slog.Logger { return o.Log.New(w) }

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	if err := checkAddr("--listen", o.Listen); err != nil {
		errs = append(errs, err)
	}
	if o.HealthListen != "" {
		if err := checkAddr("--health-listen", o.HealthListen); err != nil {
			errs = append(errs, err)
		}
	}
	if o.TLSCertFile == "" || o.TLSKeyFile == "" {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required (the apiserver calls the webhooks over TLS)"))
	}
	switch {
	case o.WebhookClientCAFile == "" && !o.AllowAnonymousWebhookClients:
		errs = append(errs, errors.New("--webhook-client-ca-file is required: the CA of the apiserver's client certificate, which `guard config` writes as "+
			apiserverconfig.ClientCAFile+" (or --allow-anonymous-webhook-clients to serve any client, not recommended)"))
	case o.WebhookClientCAFile != "" && o.AllowAnonymousWebhookClients:
		errs = append(errs, errors.New("--webhook-client-ca-file and --allow-anonymous-webhook-clients exclude each other"))
	}
	if !o.DisableAuthn {
		errs = append(errs, o.Token.Validate(" (or --disable-authn)")...)
	}
	if pu, err := url.Parse(o.RelayURL); err != nil || pu.Scheme != "https" || pu.Host == "" {
		errs = append(errs, fmt.Errorf("--relay-url %q: want the relay's https:// URL", o.RelayURL))
	}
	if o.ClientCertFile == "" || o.ClientKeyFile == "" {
		errs = append(errs, errors.New("--client-cert-file and --client-key-file are required: the cluster certificate the relay knows the cluster by (the identity Secret's tls.crt and tls.key)"))
	}
	if o.RelayTimeout <= 0 || o.RelayTimeout > 30*time.Second {
		errs = append(errs, fmt.Errorf("--relay-timeout %s: want more than 0 and at most 30s (the apiserver's webhook timeout is at most 30s)", o.RelayTimeout))
	}
	if m := FailureMode(o.RelayFailureMode); m != FailureDeny && m != FailureNoOpinion {
		errs = append(errs, fmt.Errorf("--relay-failure-mode %q: want deny or no-opinion", o.RelayFailureMode))
	}
	if o.AllowedTTL == 0 || o.DeniedTTL == 0 {
		errs = append(errs, errors.New("--allowed-ttl and --denied-ttl: want a duration (negative: do not cache)"))
	}
	if o.CacheSize <= 0 {
		errs = append(errs, fmt.Errorf("--cache-size %d: want more than 0", o.CacheSize))
	}
	if _, err := authz.NewPathMatcher(o.AllowedPaths); err != nil {
		errs = append(errs, fmt.Errorf("--allow-nonresource-path: %w", err))
	}
	if o.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %s: want 0 or more", o.ShutdownTimeout))
	}
	if err := o.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
