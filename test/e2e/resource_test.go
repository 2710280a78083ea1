package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
)

// show returns connectctl's JSON view of a cluster.
func show(t *testing.T, ctx context.Context, r *harness.Relay, name string) api.ConnectedCluster {
	t.Helper()
	out, err := r.Connectctl(ctx, "show", name, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v api.ConnectedCluster
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("connectctl show -o json: %v\n%s", err, out)
	}
	return v
}

// waitStatus polls until the cluster's status is want and the relay has
// recorded the transition to it.
func waitStatus(t *testing.T, ctx context.Context, r *harness.Relay, name, want string) api.ConnectedCluster {
	t.Helper()
	for {
		v := show(t, ctx, r, name)
		ev := v.Properties.Events
		if v.Properties.ConnectivityStatus == want && len(ev) > 0 && ev[len(ev)-1].To == want {
			return v
		}
		select {
		case <-ctx.Done():
			t.Fatalf("cluster %s never became %s (is %s)", name, want, v.Properties.ConnectivityStatus)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestMetadataMatchesKubectl(t *testing.T) {
	ctx := harness.TestContext(t)
	cs, _ := env.Cluster.Clientset()
	for i := range 2 {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("meta-node-%d", i)}}
		created, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi")}
		created.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3500m")}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.CoreV1().Nodes().Delete(context.Background(), n.Name, metav1.DeleteOptions{}) })
	}
	// What kubectl reports, straight from the API server.
	nodesOut, _, err := kubectl.Run(ctx, env.Cluster.AdminKubeconfig, nil, nil, "get", "nodes", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	wantNodes := strings.Count(nodesOut, "node/")
	verOut, _, err := kubectl.Run(ctx, env.Cluster.AdminKubeconfig, nil, nil, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ver struct {
		ServerVersion struct{ GitVersion string } `json:"serverVersion"`
	}
	json.Unmarshal([]byte(verOut), &ver)
	nodes, _ := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	var milli int64
	for _, n := range nodes.Items {
		if q, ok := n.Status.Allocatable[corev1.ResourceCPU]; ok {
			milli += q.MilliValue()
		} else if q, ok := n.Status.Capacity[corev1.ResourceCPU]; ok {
			milli += q.MilliValue()
		}
	}
	// The agent's next heartbeats carry the change.
	var v api.ConnectedCluster
	for {
		v = show(t, ctx, shared.relay, "e2e")
		if v.Properties.TotalNodeCount == wantNodes {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("relay shows %d nodes, kubectl %d", v.Properties.TotalNodeCount, wantNodes)
		case <-time.After(100 * time.Millisecond):
		}
	}
	p := v.Properties
	if p.KubernetesVersion != ver.ServerVersion.GitVersion || p.KubernetesVersion != "v1.37.2" {
		t.Errorf("kubernetesVersion %q, kubectl says %q", p.KubernetesVersion, ver.ServerVersion.GitVersion)
	}
	if p.TotalCoreCount != int(milli/1000) || p.TotalCoreCount < 7 {
		t.Errorf("totalCoreCount %d, nodes' allocatable sum to %d millicores", p.TotalCoreCount, milli)
	}
	if p.ConnectivityStatus != "Connected" || p.AgentVersion == "" || p.Distribution != "generic" || p.LastConnectivityTime.IsZero() {
		t.Errorf("properties: %+v", p)
	}
	out, err := shared.relay.Connectctl(ctx, "list")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "e2e") || !strings.Contains(out, "Connected") || !strings.Contains(out, "v1.37.2") {
		t.Errorf("connectctl list:\n%s", out)
	}
}

// TestConnectivityStatusLifecycle runs its own relay with short thresholds:
// Connecting → Connected → Offline (agent stopped) → Connected (back) →
// Expired (stopped until its certificate ran out).
func TestConnectivityStatusLifecycle(t *testing.T) {
	ctx := harness.TestContext(t)
	r := startRelay(t, ctx, &harness.RelayOptions{DataDir: filepath.Join(env.Dir, "relay-status"), ExtraArgs: []string{"--offline-after", "2s", "--cert-lifetime", "12s"}})
	tok := filepath.Join(r.DataDir, "life.token")
	if _, err := r.Connectctl(ctx, "connect", "life", "--token-file", tok, "--tags", "env=test"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ctx, r, "life", "Connecting")
	a, err := env.StartAgent(ctx, r, agent("life", 1)) // with tok
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ctx, r, "life", "Connected")
	a.Stop()
	waitStatus(t, ctx, r, "life", "Offline")
	a, err = env.StartAgent(ctx, r, agent("life", 1)) // with tok
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ctx, r, "life", "Connected")
	a.Stop()
	v := waitStatus(t, ctx, r, "life", "Expired")
	var path []string
	for _, e := range v.Properties.Events {
		path = append(path, e.To)
	}
	if got := strings.Join(path, ">"); !strings.HasPrefix(got, "Connecting>Connected>Offline>Connected>") || !strings.HasSuffix(got, "Expired") {
		t.Errorf("recorded transitions: %s", got)
	}
	out, err := r.Connectctl(ctx, "show", "life")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Events:") || !strings.Contains(out, "certificate expired on") {
		t.Errorf("connectctl show:\n%s", out)
	}
	if out, _ := r.Connectctl(ctx, "list", "--status", "Expired", "--tag", "env=test"); !strings.Contains(out, "life") {
		t.Errorf("list --status Expired --tag env=test:\n%s", out)
	}
}
