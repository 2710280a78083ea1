package relay

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/cliflag"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/pkg/logging"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay/agentapi"
	"github.com/clusterconnect/clusterconnect/relay/limits"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// HostSuffix is the cluster host suffix in effect: the flag, or derived
// from the external URL; "" when off.
func (o *Options) HostSuffix() string {
	switch o.ClusterHostSuffix {
	case "-":
		return ""
	case "":
		u, err := url.Parse(o.ExternalURL)
		if err != nil || net.ParseIP(u.Hostname()) != nil || !strings.Contains(u.Hostname(), ".") {
			return "clusters.relay.internal"
		}
		return "clusters." + u.Hostname()
	}
	return strings.ToLower(o.ClusterHostSuffix)
}

// Options are the relay command's settings. The zero value is not valid;
// start from NewOptions.
type Options struct {
	// Listen is the HTTPS address for agents, kubectl and the management API.
	Listen string
	// DataDir holds the embedded store, the dev CA and the admin token.
	DataDir string
	// Store is "embedded" (a bbolt file in DataDir, one relay) or "etcd"
	// (a fleet of relays sharing an etcd cluster: Etcd).
	Store string
	Etcd  store.EtcdConfig
	// PeerURL is where the other replicas of a fleet reach this one
	// (https://<pod IP>:<port>); ReplicaID names it (default: host name and
	// a random suffix).
	PeerURL, ReplicaID string
	// ExternalURL is how clients reach the relay; empty means
	// https://localhost:<listen port>.
	ExternalURL string
	// Hostnames go into the dev serving certificate (besides the external
	// URL's host).
	Hostnames []string
	// TLSCertFile and TLSKeyFile, when set, are the serving certificate to
	// use instead of the dev one; CAFile is then the bundle clients trust
	// for it (put into kubeconfigs; empty means the system roots).
	TLSCertFile, TLSKeyFile, CAFile string
	// AdminTokenFile holds the management API token; empty means
	// <data-dir>/admin-token, generated on first start.
	AdminTokenFile string
	// ClusterCACertFile and ClusterCAKeyFile load the cluster CA from files;
	// empty means the CA kept in the store, created on first start.
	ClusterCACertFile, ClusterCAKeyFile string
	// CertLifetime of the cluster certificates the relay issues.
	CertLifetime time.Duration
	// RegistrationTokenTTL is the default lifetime of registration tokens.
	RegistrationTokenTTL time.Duration
	// Location is the relay's region, shown on every cluster.
	Location string
	// OfflineAfter is how long after its last heartbeat a cluster is Offline.
	OfflineAfter time.Duration
	// HeartbeatWriteInterval: a heartbeat that changes neither a cluster's
	// metadata nor its status is written to the store only once the stored
	// one is this old (at most one such write per cluster per interval,
	// however often agents send). Shorter than OfflineAfter; zero means
	// agentapi.DefaultHeartbeatWriteInterval (30 s), or half of OfflineAfter
	// when that is shorter (Validate fills it in).
	HeartbeatWriteInterval time.Duration
	// Tunnel settings.
	StreamWindow      uint
	MaxStreams        int
	KeepAliveInterval time.Duration
	KeepAliveTimeout  time.Duration
	// ShutdownTimeout bounds the drain of tunnels and requests on SIGTERM.
	ShutdownTimeout time.Duration
	// HealthListen is the plain HTTP address of /readyz and /metrics, apart
	// from the internet-facing listener (which keeps only /healthz).
	HealthListen string
	// Entra verifies users' Entra ID access tokens (data path and management
	// API); off unless a tenant is given.
	Entra entra.Options
	// ClusterHostSuffix names clusters by host: <cluster>.<suffix> as the TLS
	// server name (kubeconfigs set tls-server-name; no DNS needed). Empty
	// means clusters.<external host> (clusters.relay.internal for an IP);
	// "-" turns it off (kubeconfigs then use /clusters/<name>).
	ClusterHostSuffix string
	// ClientCertLifetime of relay client certificates (token mode).
	ClientCertLifetime time.Duration
	// AuditLog is the audit log file ("-" = standard output; empty = kept
	// in memory only, for connectctl audit).
	AuditLog string
	// KEKFile holds the key-encryption key that seals the cluster CA's key
	// in the store; empty means $RELAY_KEK, else <data-dir>/kek (generated).
	KEKFile string
	// Limits per caller and per cluster on the data path.
	Limits limits.Config
	// Log selects the log level and format.
	Log logging.Options
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		Listen:               ":8443",
		DataDir:              "relay-data",
		Store:                "embedded",
		Hostnames:            []string{"localhost", "127.0.0.1", "::1"},
		CertLifetime:         90 * 24 * time.Hour,
		Location:             "local",
		OfflineAfter:         15 * time.Minute,
		RegistrationTokenTTL: time.Hour,
		StreamWindow:         tunnel.DefaultStreamWindow,
		MaxStreams:           tunnel.DefaultMaxStreams,
		KeepAliveInterval:    tunnel.DefaultKeepAliveInterval,
		KeepAliveTimeout:     tunnel.DefaultKeepAliveTimeout,
		ShutdownTimeout:      15 * time.Second,
		HealthListen:         "127.0.0.1:8444",
		Entra:                entra.DefaultOptions(),
		ClientCertLifetime:   time.Hour,
		Limits:               limits.Defaults(),
		Log:                  logging.Defaults(),
	}
}

// Flags registers the options on fs.
func (o *Options) Flags(fs *flag.FlagSet) {
	fs.StringVar(&o.Listen, "listen", o.Listen, "HTTPS listen address (agents, kubectl, management API)")
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir, "directory for the embedded store, dev CA and admin token")
	fs.StringVar(&o.Store, "store", o.Store, "where state is kept: embedded (a file in --data-dir, one relay) or etcd (a fleet of relays sharing an etcd cluster)")
	fs.Var(&cliflag.StringList{Dst: &o.Etcd.Endpoints}, "etcd-endpoints", "etcd client URLs, https://host:2379 (repeatable or comma-separated; with --store etcd)")
	fs.StringVar(&o.Etcd.CertFile, "etcd-cert", o.Etcd.CertFile, "client certificate for etcd (PEM)")
	fs.StringVar(&o.Etcd.KeyFile, "etcd-key", o.Etcd.KeyFile, "its key (PEM)")
	fs.StringVar(&o.Etcd.CAFile, "etcd-ca", o.Etcd.CAFile, "CA bundle of the etcd members' serving certificates")
	fs.StringVar(&o.PeerURL, "peer-url", o.PeerURL, "with --store etcd: https://host:port where the other replicas reach this one's --listen (forwarded requests)")
	fs.StringVar(&o.ReplicaID, "replica-id", o.ReplicaID, "with --store etcd: this replica's name in the fleet (default: host name and a random suffix)")
	fs.StringVar(&o.Etcd.Prefix, "etcd-prefix", o.Etcd.Prefix, "key prefix in etcd (several relay fleets can share one etcd cluster under different prefixes)")
	fs.StringVar(&o.ExternalURL, "external-url", o.ExternalURL, "URL clients use to reach this relay (default https://localhost:<port>)")
	fs.Func("hostname", "extra host name or IP for the dev serving certificate (repeatable; default localhost, 127.0.0.1, ::1)", func(v string) error {
		o.Hostnames = append(o.Hostnames, v)
		return nil
	})
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "serving certificate (PEM); default: a dev certificate in the data dir")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", o.TLSKeyFile, "serving key (PEM)")
	fs.StringVar(&o.CAFile, "ca-file", o.CAFile, "CA bundle clients trust for --tls-cert-file; put into issued kubeconfigs")
	fs.StringVar(&o.AdminTokenFile, "admin-token-file", o.AdminTokenFile, "file with the management API token (default <data-dir>/admin-token, generated)")
	fs.StringVar(&o.ClusterCACertFile, "cluster-ca-cert-file", o.ClusterCACertFile, "cluster CA certificate (PEM); default: a CA kept in the store, created on first start")
	fs.StringVar(&o.ClusterCAKeyFile, "cluster-ca-key-file", o.ClusterCAKeyFile, "cluster CA private key (PEM)")
	fs.DurationVar(&o.CertLifetime, "cert-lifetime", o.CertLifetime, "lifetime of cluster certificates; agents renew at two-thirds of it")
	fs.DurationVar(&o.RegistrationTokenTTL, "registration-token-ttl", o.RegistrationTokenTTL, "default lifetime of one-time registration tokens")
	fs.StringVar(&o.Location, "location", o.Location, "the relay's region, shown as each cluster's location")
	fs.DurationVar(&o.OfflineAfter, "offline-after", o.OfflineAfter, "a cluster without a heartbeat for this long is Offline")
	fs.DurationVar(&o.HeartbeatWriteInterval, "heartbeat-write-interval", o.HeartbeatWriteInterval, "store a cluster's heartbeat at most once per this interval when its metadata and status did not change, to bound the store's writes; less than --offline-after (default 30s, or half of --offline-after when that is shorter)")
	fs.UintVar(&o.StreamWindow, "stream-window", o.StreamWindow, "per-stream receive window in bytes")
	fs.IntVar(&o.MaxStreams, "max-streams", o.MaxStreams, "streams open at once per tunnel")
	fs.DurationVar(&o.KeepAliveInterval, "keepalive-interval", o.KeepAliveInterval, "tunnel ping interval")
	fs.DurationVar(&o.KeepAliveTimeout, "keepalive-timeout", o.KeepAliveTimeout, "time without a ping answer or write progress before a tunnel is declared dead")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "how long in-flight requests may finish on SIGTERM")
	fs.StringVar(&o.HealthListen, "health-listen", o.HealthListen, "plain HTTP address for /readyz and /metrics (keep it off the internet-facing network)")
	o.Entra.Flags(fs)
	fs.StringVar(&o.ClusterHostSuffix, "cluster-host-suffix", o.ClusterHostSuffix, "name clusters by TLS server name <cluster>.<suffix> in issued kubeconfigs (default clusters.<external host>; - for path-style /clusters/<name> only)")
	fs.DurationVar(&o.ClientCertLifetime, "client-cert-lifetime", o.ClientCertLifetime, "lifetime of relay client certificates (token mode)")
	fs.StringVar(&o.AuditLog, "audit-log", o.AuditLog, "append the audit log (JSON lines) to this file; - for standard output")
	fs.StringVar(&o.KEKFile, "kek-file", o.KEKFile, "key-encryption key sealing the cluster CA key in the store (default $RELAY_KEK, else <data-dir>/kek, generated)")
	o.Limits.Flags(fs)
	o.Log.Flags(fs)
}

// Logger is the logger the options select, writing to w.
func (o *Options) Logger(w io.Writer) *slog.Logger { return o.Log.New(w) }

// Validate checks the options and fills in derived defaults.
func (o *Options) Validate() error {
	var errs []error
	_, port, err := net.SplitHostPort(o.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: want host:port: %w", o.Listen, err))
	}
	if o.ExternalURL == "" && port != "" {
		o.ExternalURL = "https://localhost:" + port
	}
	if u, err := url.Parse(o.ExternalURL); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("--external-url %q: want an https:// URL", o.ExternalURL))
	} else if h := u.Hostname(); !contains(o.Hostnames, h) {
		o.Hostnames = append(o.Hostnames, h)
	}
	if o.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	switch o.Store {
	case "embedded":
		if len(o.Etcd.Endpoints) > 0 {
			errs = append(errs, errors.New("--etcd-endpoints needs --store etcd"))
		}
	case "etcd":
		if len(o.Etcd.Endpoints) == 0 {
			errs = append(errs, errors.New("--store etcd needs --etcd-endpoints"))
		}
		for _, e := range o.Etcd.Endpoints {
			if u, err := url.Parse(e); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				errs = append(errs, fmt.Errorf("--etcd-endpoints %q: want https://host:port", e))
			}
		}
		if (o.Etcd.CertFile == "") != (o.Etcd.KeyFile == "") {
			errs = append(errs, errors.New("--etcd-cert and --etcd-key go together"))
		}
		if u, err := url.Parse(o.PeerURL); o.PeerURL == "" || err != nil || u.Scheme != "https" || u.Port() == "" {
			errs = append(errs, fmt.Errorf("--store etcd needs --peer-url https://host:port, the address the other replicas reach this one at (got %q)", o.PeerURL))
		}
	default:
		errs = append(errs, fmt.Errorf("--store %q: want embedded or etcd", o.Store))
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together"))
	}
	if (o.ClusterCACertFile == "") != (o.ClusterCAKeyFile == "") {
		errs = append(errs, errors.New("--cluster-ca-cert-file and --cluster-ca-key-file go together"))
	}
	if o.CertLifetime < 10*time.Second {
		errs = append(errs, fmt.Errorf("--cert-lifetime %s: want at least 10s (short lifetimes are for tests)", o.CertLifetime))
	}
	if o.RegistrationTokenTTL < time.Second || o.RegistrationTokenTTL > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("--registration-token-ttl %s: want 1s to 7 days", o.RegistrationTokenTTL))
	}
	if o.OfflineAfter < time.Second {
		errs = append(errs, fmt.Errorf("--offline-after %s: want at least 1s", o.OfflineAfter))
	}
	if o.HeartbeatWriteInterval == 0 {
		o.HeartbeatWriteInterval = min(agentapi.DefaultHeartbeatWriteInterval, o.OfflineAfter/2)
	}
	if o.HeartbeatWriteInterval <= 0 || o.HeartbeatWriteInterval >= o.OfflineAfter {
		errs = append(errs, fmt.Errorf("--heartbeat-write-interval %s: want more than 0 and less than --offline-after (%s)", o.HeartbeatWriteInterval, o.OfflineAfter))
	}
	if o.StreamWindow < 256<<10 || o.StreamWindow > 1<<30 {
		errs = append(errs, fmt.Errorf("--stream-window %d: want 256 KiB to 1 GiB", o.StreamWindow))
	}
	if o.MaxStreams < 1 {
		errs = append(errs, fmt.Errorf("--max-streams %d: want at least 1", o.MaxStreams))
	}
	if o.KeepAliveInterval <= 0 || o.KeepAliveTimeout <= 0 {
		errs = append(errs, errors.New("--keepalive-interval and --keepalive-timeout must be positive"))
	}
	if len(o.Entra.Tenants) > 0 || len(o.Entra.Audiences) > 0 {
		errs = append(errs, o.Entra.Validate(" (or give neither --tenant nor --audience to turn Entra sign-in off)")...)
	}
	if o.Entra.UsernamePrefix != "" || o.Entra.GroupsPrefix != "" {
		errs = append(errs, errors.New("--username-prefix and --groups-prefix are for kube-aad-proxy: the relay matches role assignments by object ID and group ID as Entra sends them"))
	}
	if o.ClientCertLifetime < time.Minute || o.ClientCertLifetime > 24*time.Hour {
		errs = append(errs, fmt.Errorf("--client-cert-lifetime %s: want 1m to 24h", o.ClientCertLifetime))
	}
	if s := o.ClusterHostSuffix; s != "" && s != "-" && (strings.HasPrefix(s, ".") || strings.HasPrefix(s, "*") || net.ParseIP(s) != nil) {
		errs = append(errs, fmt.Errorf("--cluster-host-suffix %q: want a DNS suffix such as clusters.relay.example", s))
	}
	if err := o.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if strings.EqualFold(v, x) {
			return true
		}
	}
	return false
}
