package harness

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/test/proc"
)

// IdentitySecret is the name of the Secret an agent keeps its identity in
// (the agent's default).
const IdentitySecret = "clusterconnect-identity"

// AgentOptions configure a clusteragent ([Env.StartAgent],
// [Relay.ConnectCluster]). Cluster is required; every other zero value
// means a default.
type AgentOptions struct {
	// Cluster is the cluster's registered name.
	Cluster string
	// TokenFile holds the registration token; empty means
	// <relay DataDir>/<Cluster>.token, where ConnectCluster writes it.
	TokenFile string
	// Namespace is where the agent keeps its identity Secret; empty means
	// agent-<Cluster>. It is created if it does not exist.
	Namespace string
	// Roles is --roles; empty means the agent's default roles.
	Roles string
	// Tunnels is --tunnels; 0 leaves out the tunnel flags (count,
	// keep-alive, drain), for an agent without the connect role.
	Tunnels int
	// Upstream and UpstreamCAFile are the "kube" target; empty means the
	// shared kube-apiserver.
	Upstream, UpstreamCAFile string
	// HeartbeatInterval is --heartbeat-interval; 0 means the agent's
	// default.
	HeartbeatInterval time.Duration
	// ExtraArgs are added after the harness's flags (for a flag given
	// twice, the last wins).
	ExtraArgs []string
}

func (o *AgentOptions) defaults(r *Relay) {
	if o.TokenFile == "" {
		o.TokenFile = filepath.Join(r.DataDir, o.Cluster+".token")
	}
	if o.Namespace == "" {
		o.Namespace = "agent-" + o.Cluster
	}
}

// StartAgent starts a clusteragent for relay r; it does not wait for
// anything (see [Relay.WaitTunnels], [WaitLog], [Env.WaitIdentity]). The
// agent's own API access is the shared cluster's admin kubeconfig; its log
// is <relay DataDir>/<Cluster>-agent.log, appended to by a restart.
func (e *Env) StartAgent(ctx context.Context, r *Relay, opts AgentOptions) (*proc.Process, error) {
	opts.defaults(r)
	if opts.Upstream == "" {
		opts.Upstream, opts.UpstreamCAFile = e.Cluster.URL, e.Cluster.CAFile
	}
	if err := e.Cluster.CreateNamespace(ctx, opts.Namespace); err != nil {
		return nil, err
	}
	args := []string{
		"--relay-url", r.URL,
		"--cluster", opts.Cluster,
		"--registration-token-file", opts.TokenFile,
		"--namespace", opts.Namespace,
		"--kubeconfig", e.Cluster.AdminKubeconfig,
		"--relay-ca-file", r.CAFile(),
		"--upstream", opts.Upstream,
		"--upstream-ca-file", opts.UpstreamCAFile,
		"--listen", "127.0.0.1:0",
		"--backoff-max", "1s",
		"--log-level", "debug",
	}
	if opts.Roles != "" {
		args = append(args, "--roles", opts.Roles)
	}
	if opts.Tunnels > 0 {
		args = append(args,
			"--tunnels", strconv.Itoa(opts.Tunnels),
			"--keepalive-interval", "1s", "--keepalive-timeout", "2s",
			"--drain-timeout", "2s")
	}
	if opts.HeartbeatInterval > 0 {
		args = append(args, "--heartbeat-interval", opts.HeartbeatInterval.String())
	}
	p, err := proc.Start(slog.New(slog.DiscardHandler), "clusteragent", e.Binary("clusteragent"),
		filepath.Join(r.DataDir, opts.Cluster+"-agent.log"), append(args, opts.ExtraArgs...))
	if err != nil {
		return nil, fmt.Errorf("start agent of %s: %w", opts.Cluster, err)
	}
	e.OnStop(p.Stop)
	return p, nil
}

// Identity is the cluster certificate an agent enrolled for, as files
// (what a Secret volume would hold): tls.crt, tls.key and the relay's
// ca.crt.
type Identity struct {
	CertFile, KeyFile, CAFile string
}

// WaitIdentity waits until agent has written its identity Secret in
// namespace (or 30 s pass) and writes its three keys to files in dir.
func (e *Env) WaitIdentity(ctx context.Context, agent *proc.Process, namespace, dir string) (*Identity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cs, err := e.Cluster.Clientset()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	id := &Identity{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), CAFile: filepath.Join(dir, "ca.crt")}
	files := map[string]string{id.CertFile: "tls.crt", id.KeyFile: "tls.key", id.CAFile: "ca.crt"}
	err = poll(ctx, agent, "no identity Secret in "+namespace, func() error {
		s, err := cs.CoreV1().Secrets(namespace).Get(ctx, IdentitySecret, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return errNotYet
		}
		if err != nil {
			return err
		}
		for _, key := range files {
			if len(s.Data[key]) == 0 {
				return fmt.Errorf("identity Secret has no %s yet", key)
			}
		}
		for path, key := range files {
			if err := os.WriteFile(path, s.Data[key], 0o600); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return id, nil
}
