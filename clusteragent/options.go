// Package clusteragent runs the in-cluster agent set. Each agent is a role
// (a sub-package) of one binary; today: connect, the clusterconnect-agent.
package clusteragent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/clusteragent/heartbeat"
	"github.com/clusterconnect/clusterconnect/clusteragent/identity"
	"github.com/clusterconnect/clusterconnect/pkg/logging"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

// In-cluster defaults: the API server as every pod sees it.
const (
	inClusterCAFile        = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	inClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
)

// Options are the clusteragent command's settings; start from NewOptions.
type Options struct {
	Roles    []string
	RelayURL string
	Cluster  string
	// RegistrationTokenFile holds the one-time token printed by `connectctl
	// clusters create`; read only when the agent must enrol.
	RegistrationTokenFile string
	RelayCAFile           string
	// Namespace holds the identity Secret; default: the pod's namespace.
	Namespace string
	// IdentitySecret names that Secret.
	IdentitySecret string
	// IdentityDir, when set, is the identity Secret mounted as files: the
	// process reads the identity from there (following its changes) instead
	// of running the identity role, and needs no access to Secrets. The
	// agent chart runs connect and sync so, beside one identity Deployment.
	IdentityDir string
	// Kubeconfig for the agent's own Kubernetes API access (the identity
	// Secret); empty means in-cluster.
	Kubeconfig string
	Tunnels    int
	// Upstream is where the "kube" target goes: the API server (or
	// kube-aad-proxy). Default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
	Upstream       string
	UpstreamCAFile string
	// Allow adds targets: name=https://host:port or name=tcp://host:port.
	Allow map[string]string
	// Listen serves /healthz and /metrics.
	Listen            string
	StreamWindow      uint
	MaxStreams        int
	KeepAliveInterval time.Duration
	KeepAliveTimeout  time.Duration
	DrainTimeout      time.Duration
	// HeartbeatInterval is how often the sync role reports to the relay.
	HeartbeatInterval time.Duration
	// BackoffMin and BackoffMax bound the reconnect backoff (full jitter).
	BackoffMin, BackoffMax time.Duration
	Log                    logging.Options
}

// NewOptions returns the defaults, reading the in-cluster environment.
func NewOptions() *Options {
	o := &Options{
		Roles:             []string{"connect", "sync"},
		HeartbeatInterval: heartbeat.DefaultInterval,
		Tunnels:           2,
		Listen:            ":8080",
		Allow:             map[string]string{},
		StreamWindow:      tunnel.DefaultStreamWindow,
		MaxStreams:        tunnel.DefaultMaxStreams,
		KeepAliveInterval: tunnel.DefaultKeepAliveInterval,
		KeepAliveTimeout:  tunnel.DefaultKeepAliveTimeout,
		DrainTimeout:      tunnel.DefaultDrainTimeout,
		BackoffMin:        500 * time.Millisecond,
		BackoffMax:        8 * time.Second,
		Log:               logging.Defaults(),
		IdentitySecret:    identity.DefaultSecretName,
		Namespace:         os.Getenv("POD_NAMESPACE"),
	}
	if o.Namespace == "" {
		if b, err := os.ReadFile(inClusterNamespaceFile); err == nil {
			o.Namespace = strings.TrimSpace(string(b))
		}
	}
	if h, p := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"); h != "" && p != "" {
		o.Upstream = "https://" + net.JoinHostPort(h, p)
		o.UpstreamCAFile = inClusterCAFile
	}
	return o
}

// Flags registers the options on fs.
func (o *Options) Flags(fs *flag.FlagSet) {
	fs.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", o.HeartbeatInterval, "how often the sync role sends a heartbeat (jittered ±10%)")
	fs.Func("roles", "comma-separated agent roles to run: identity (enrolment, renewal, the identity Secret), connect (tunnels), sync (heartbeat, metadata, role health); identity runs whenever --identity-dir is not set", func(v string) error {
		o.Roles = strings.Split(v, ",")
		return nil
	})
	fs.StringVar(&o.RelayURL, "relay-url", o.RelayURL, "relay base URL, https://host:port")
	fs.StringVar(&o.Cluster, "cluster", o.Cluster, "this cluster's registered name")
	fs.StringVar(&o.RegistrationTokenFile, "registration-token-file", o.RegistrationTokenFile, "file with the one-time registration token from `connectctl clusters create` (used only to enrol)")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace of the identity Secret (default: $POD_NAMESPACE, or the pod's namespace)")
	fs.StringVar(&o.IdentitySecret, "identity-secret", o.IdentitySecret, "name of the Secret holding the cluster's key and certificate")
	fs.StringVar(&o.IdentityDir, "identity-dir", o.IdentityDir, "directory of the mounted identity Secret (tls.crt, tls.key, ca.crt): read and followed instead of running the identity role")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig for the agent's own API access (default: in-cluster)")
	fs.StringVar(&o.RelayCAFile, "relay-ca-file", o.RelayCAFile, "CA bundle to trust for the relay (added to the system roots)")
	fs.IntVar(&o.Tunnels, "tunnels", o.Tunnels, "parallel tunnels to keep")
	fs.StringVar(&o.Upstream, "upstream", o.Upstream, "Kubernetes API upstream for the \"kube\" target (default: the in-cluster API server)")
	fs.StringVar(&o.UpstreamCAFile, "upstream-ca-file", o.UpstreamCAFile, "CA bundle that signed the upstream's certificate")
	fs.Func("allow", "extra allow-list target, name=https://host:port or name=tcp://host:port (repeatable)", func(v string) error {
		name, u, ok := strings.Cut(v, "=")
		if !ok || name == "" || u == "" {
			return fmt.Errorf("want name=url, got %q", v)
		}
		o.Allow[name] = u
		return nil
	})
	fs.StringVar(&o.Listen, "listen", o.Listen, "address for /healthz and /metrics")
	fs.UintVar(&o.StreamWindow, "stream-window", o.StreamWindow, "per-stream receive window in bytes")
	fs.IntVar(&o.MaxStreams, "max-streams", o.MaxStreams, "streams open at once per tunnel")
	fs.DurationVar(&o.KeepAliveInterval, "keepalive-interval", o.KeepAliveInterval, "tunnel ping interval")
	fs.DurationVar(&o.KeepAliveTimeout, "keepalive-timeout", o.KeepAliveTimeout, "time without a ping answer before a tunnel is declared dead")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, "how long in-flight streams may finish on SIGTERM")
	fs.DurationVar(&o.BackoffMin, "backoff-min", o.BackoffMin, "first reconnect backoff ceiling; it doubles per failed attempt")
	fs.DurationVar(&o.BackoffMax, "backoff-max", o.BackoffMax, "largest reconnect backoff ceiling (waits are uniform below the ceiling)")
	o.Log.Flags(fs)
}

// Logger is the logger the options select, writing to w.
func (o *Options) Logger(w io.Writer) *slog.Logger { return o.Log.New(w) }

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	for _, r := range o.Roles {
		if r != "identity" && r != "connect" && r != "sync" {
			errs = append(errs, fmt.Errorf("--roles: unknown role %q (known: identity, connect, sync)", r))
		}
	}
	if len(o.Roles) == 0 {
		errs = append(errs, errors.New("--roles: at least one role"))
	}
	if o.IdentityDir != "" && o.has("identity") {
		errs = append(errs, errors.New("--identity-dir reads the identity another process keeps: it cannot go with the identity role"))
	}
	if o.IdentityDir != "" && o.RegistrationTokenFile != "" {
		errs = append(errs, errors.New("--registration-token-file is for the identity role: drop it with --identity-dir"))
	}
	if o.RelayURL == "" {
		errs = append(errs, errors.New("--relay-url is required"))
	}
	if o.Cluster == "" {
		errs = append(errs, errors.New("--cluster is required"))
	}
	if o.Namespace == "" && o.needsKube() {
		errs = append(errs, errors.New("--namespace is required outside a pod (where the identity Secret and the agent roles live)"))
	}
	if o.IdentitySecret == "" {
		errs = append(errs, errors.New("--identity-secret must not be empty"))
	}
	if o.Upstream == "" && o.has("connect") {
		errs = append(errs, errors.New("--upstream is required outside a cluster (e.g. https://127.0.0.1:6443)"))
	}
	if o.Tunnels < 1 {
		errs = append(errs, fmt.Errorf("--tunnels %d: want at least 1", o.Tunnels))
	}
	if _, ok := o.Allow["kube"]; ok {
		errs = append(errs, errors.New(`--allow: "kube" is set by --upstream`))
	}
	if o.StreamWindow < 256<<10 || o.StreamWindow > 1<<30 {
		errs = append(errs, fmt.Errorf("--stream-window %d: want 256 KiB to 1 GiB", o.StreamWindow))
	}
	if o.MaxStreams < 1 {
		errs = append(errs, fmt.Errorf("--max-streams %d: want at least 1", o.MaxStreams))
	}
	if o.KeepAliveInterval <= 0 || o.KeepAliveTimeout <= 0 || o.DrainTimeout < 0 {
		errs = append(errs, errors.New("--keepalive-interval and --keepalive-timeout must be positive, --drain-timeout not negative"))
	}
	if o.HeartbeatInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("--heartbeat-interval %s: want at least 100ms", o.HeartbeatInterval))
	}
	if o.BackoffMin <= 0 || o.BackoffMax < o.BackoffMin {
		errs = append(errs, fmt.Errorf("--backoff-min %s and --backoff-max %s: want 0 < min <= max", o.BackoffMin, o.BackoffMax))
	}
	if err := o.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// runsIdentity reports whether this process keeps the identity (enrols,
// renews, writes the Secret) rather than reading it from --identity-dir.
func (o *Options) runsIdentity() bool { return o.IdentityDir == "" }

// needsKube reports whether this process uses the Kubernetes API: the
// identity role (its Secret) and sync (metadata, role health) do; connect
// with a mounted identity does not.
func (o *Options) needsKube() bool { return o.runsIdentity() || o.has("sync") }

// has reports whether role is enabled.
func (o *Options) has(role string) bool {
	for _, r := range o.Roles {
		if r == role {
			return true
		}
	}
	return false
}
