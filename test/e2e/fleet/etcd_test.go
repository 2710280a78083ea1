package fleet

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
)

// TestEtcdMembersLost: with one of the three etcd members killed, requests
// and management writes go on; with two killed, the replicas say so in
// readiness and refuse writes with a message that names the cause, while
// kubectl through the tunnels keeps working; when a member returns, they
// are ready and accept writes again.
func TestEtcdMembersLost(t *testing.T) {
	ctx := harness.TestContext(t)
	e := shared.etcd
	r := shared.relays[1]
	ready := func(r *harness.Relay) int { return status(ctx, r.HealthURL+"/readyz") }
	kget := func() error {
		_, _, err := kubectl.Run(ctx, shared.kubecfgs[1], nil, nil, "get", "ns", "kube-system", "-o", "name", "--request-timeout=10s")
		return err
	}
	e.Kill(0)
	restarted := map[int]bool{}
	defer func() {
		for i := range 2 {
			if !restarted[i] {
				if err := e.Restart(ctx, i); err != nil {
					t.Errorf("restart etcd member %d: %v", i, err)
				}
			}
		}
	}()
	if err := kget(); err != nil {
		t.Errorf("kubectl with one etcd member down: %v", err)
	}
	if out, err := r.Connectctl(ctx, "update", clusterName, "--tags", "etcd=one-down"); err != nil {
		t.Errorf("a write with one etcd member down: %v\n%s", err, out)
	}
	e.Kill(1)
	// Readiness turns 503 once the store cannot reach a quorum.
	deadline := time.Now().Add(20 * time.Second)
	for ready(r) == http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("replica still ready 20 s after etcd lost its quorum")
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, err := r.Connectctl(ctx, "update", clusterName, "--tags", "etcd=two-down")
	if err == nil || !strings.Contains(out, "503") && !strings.Contains(out, "unavailable") {
		t.Errorf("a write without quorum: %v\n%s; want a refusal that says the store is unavailable", err, out)
	}
	t.Logf("write without quorum: %s", strings.TrimSpace(out))
	if err := kget(); err != nil {
		t.Logf("kubectl without etcd quorum: %v (admission needs the store once its cached decision expired)", err)
	}
	if err := e.Restart(context.WithoutCancel(ctx), 0); err != nil {
		t.Fatal(err)
	}
	restarted[0] = true
	deadline = time.Now().Add(30 * time.Second)
	for ready(r) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("replica not ready 30 s after an etcd member returned")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := r.Connectctl(ctx, "update", clusterName, "--tags", "etcd=back"); err != nil {
		t.Errorf("a write after recovery: %v\n%s", err, out)
	}
	if err := kget(); err != nil {
		t.Errorf("kubectl after recovery: %v", err)
	}
}
