// Package fleet runs a relay fleet as real processes: three relay replicas
// sharing a real three-member etcd cluster (TLS, client certificates),
// behind a TCP load balancer the agent dials; the real kubectl reaches the
// cluster through each replica, whichever holds the agent's tunnels.
package fleet

import (
	"context"
	"fmt"
	"time"

	"testing"

	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/harness"
)

const clusterName = "fleet"

var env *harness.Env

var shared struct {
	etcd     *cluster.Etcd
	relays   []*harness.Relay
	lb       *harness.Balancer
	saToken  string
	kubecfgs []string // one per replica: the same kubeconfig, another host:port
}

func TestMain(m *testing.M) { harness.Main(m, "e2e/fleet", setup) }

func setup(ctx context.Context, e *harness.Env) (err error) {
	env = e
	if err := env.StartCluster(ctx, nil); err != nil {
		return err
	}
	dir, err := env.NewDir("etcd")
	if err != nil {
		return err
	}
	if shared.etcd, err = cluster.StartEtcd(ctx, cluster.EtcdOptions{Members: 3, Dir: dir, Logger: env.Logger}); err != nil {
		return err
	}
	env.OnStop(shared.etcd.Stop)
	if shared.relays, err = env.StartFleet(ctx, 3, shared.etcd); err != nil {
		return err
	}
	var backends []string
	for _, r := range shared.relays {
		backends = append(backends, fmt.Sprintf("127.0.0.1:%d", r.Port))
	}
	if shared.lb, err = env.StartBalancer(backends); err != nil {
		return err
	}
	if shared.saToken, err = env.Cluster.ServiceAccountToken(ctx, "kube-system", "fleet-admin", true); err != nil {
		return err
	}
	r0 := shared.relays[0]
	if _, err := r0.Connectctl(ctx, "clusters", "create", clusterName, "--token-file", r0.DataDir+"/"+clusterName+".token"); err != nil {
		return err
	}
	// The agent dials the load balancer, as it would a fleet's one name;
	// its first two connections both go to replica 0, so the agent must
	// spread its tunnels itself (TestTunnelsSpread).
	shared.lb.Pin(2)
	lbRelay := &harness.Relay{URL: shared.lb.URL, DataDir: r0.DataDir}
	if _, err := env.StartAgent(ctx, lbRelay, harness.AgentOptions{Cluster: clusterName, Tunnels: 2, HeartbeatInterval: time.Second,
		TokenFile: r0.DataDir + "/" + clusterName + ".token"}); err != nil {
		return err
	}
	if err := waitTunnels(ctx, 2); err != nil {
		return err
	}
	for _, r := range shared.relays {
		kc, err := r.Kubeconfig(ctx, clusterName, shared.saToken)
		if err != nil {
			return err
		}
		shared.kubecfgs = append(shared.kubecfgs, kc)
	}
	return nil
}

// waitTunnels waits until the replicas together hold n tunnels.
func waitTunnels(ctx context.Context, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		total := 0
		for _, r := range shared.relays {
			if r.Proc.Exited() {
				continue
			}
			cl, err := r.Client()
			if err != nil {
				return err
			}
			if v, err := cl.GetCluster(ctx, clusterName); err == nil {
				total += v.Properties.Tunnels
			}
		}
		if total >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d tunnels up across the replicas: %w", total, n, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
