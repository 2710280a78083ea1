// Package e2e runs the whole chain as real processes: etcd, kube-apiserver,
// the relay and the clusterconnect agent (built from this module), and the
// real kubectl, which reaches the API server through the relay and a tunnel.
package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/proc"
)

const nodeName = "e2e-node"

// env is the shared environment: one apiserver and one test kubelet.
var env *harness.Env

// shared is what every test uses besides: one relay with one registered
// and connected cluster.
var shared struct {
	relay      *harness.Relay
	saToken    string // cluster-admin service-account token
	kubeconfig string // relay-issued, with saToken
}

func TestMain(m *testing.M) { harness.Main(m, "e2e", setup) }

func setup(ctx context.Context, e *harness.Env) (err error) {
	env = e
	if err := env.StartCluster(ctx, nil); err != nil {
		return err
	}
	if err := env.StartKubelet(ctx, nodeName); err != nil {
		return err
	}
	if shared.saToken, err = env.Cluster.ServiceAccountToken(ctx, "kube-system", "e2e-admin", true); err != nil {
		return fmt.Errorf("service account token: %w", err)
	}
	if shared.relay, err = env.StartRelay(ctx, nil); err != nil {
		return err
	}
	if _, err := shared.relay.ConnectCluster(ctx, agent("e2e", 2)); err != nil {
		return fmt.Errorf("connect cluster: %w", err)
	}
	shared.kubeconfig, err = shared.relay.Kubeconfig(ctx, "e2e", shared.saToken)
	return err
}

// agent is an agent of cluster name with n tunnels to the shared
// apiserver and a quick heartbeat (for the metadata and status tests).
func agent(name string, tunnels int) harness.AgentOptions {
	return harness.AgentOptions{Cluster: name, Tunnels: tunnels, HeartbeatInterval: 300 * time.Millisecond}
}

// startRelay starts a relay of t's own, stopped when t ends.
func startRelay(t *testing.T, ctx context.Context, opts *harness.RelayOptions) *harness.Relay {
	t.Helper()
	r, err := env.StartRelay(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// connect connects cluster name to r with an agent of two tunnels,
// stopped when t ends, and returns the agent and a relay-issued kubeconfig
// of the cluster with the admin service-account token.
func connect(t *testing.T, ctx context.Context, r *harness.Relay, name string) (*proc.Process, string) {
	t.Helper()
	a, err := r.ConnectCluster(ctx, agent(name, 2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	kc, err := r.Kubeconfig(ctx, name, shared.saToken)
	if err != nil {
		t.Fatal(err)
	}
	return a, kc
}
