package aad

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
)

// dataAction is the prefix of the Arc data actions guard names.
const dataAction = "Microsoft.Kubernetes/connectedClusters/"

// forbidden runs kubectl through kc and fails the test unless the
// apiserver refused it with 403 mentioning want (kubectl get prints "Error
// from server (Forbidden)", kubectl create "… is forbidden").
func forbidden(t *testing.T, ctx context.Context, kc, want string, args ...string) {
	t.Helper()
	_, stderr, err := kubectl.Run(ctx, kc, nil, nil, args...)
	if err == nil || !strings.Contains(strings.ToLower(stderr), "forbidden") || !strings.Contains(stderr, want) {
		t.Errorf("kubectl %s: want Forbidden mentioning %q, got %v\n%s", strings.Join(args, " "), want, err, stderr)
	}
}

// eventually runs kubectl through kc until it succeeds (caches of guard and
// of the apiserver let a new assignment through within a few seconds).
func eventually(t *testing.T, ctx context.Context, kc string, args ...string) {
	t.Helper()
	for {
		_, stderr, err := kubectl.Run(ctx, kc, nil, nil, args...)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kubectl %s never succeeded: %v\n%s", strings.Join(args, " "), err, stderr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// canI runs kubectl auth can-i through kc, which must answer want.
func canI(t *testing.T, ctx context.Context, kc string, want bool, args ...string) {
	t.Helper()
	out, stderr, err := kubectl.Run(ctx, kc, nil, nil, append([]string{"auth", "can-i"}, args...)...)
	if err != nil && kubectl.ExitCode(err) != 1 {
		t.Fatalf("kubectl auth can-i %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	if got := strings.TrimSpace(out) == "yes"; got != want {
		t.Errorf("kubectl auth can-i %s = %q, want %v\n%s", strings.Join(args, " "), out, want, stderr)
	}
}

// TestGuardThroughTheChain: kubectl → relay → agent → kube-aad-proxy →
// apiserver → guard → relay checkAccess. Users without RBAC bindings are
// decided by guard from role assignments made with connectctl.
func TestGuardThroughTheChain(t *testing.T) {
	ctx := harness.TestContext(t)
	ns, other := env.Namespace(t, ctx), env.Namespace(t, ctx)
	createPod(t, ctx, ns, "pod1")

	// A user with no RBAC binding and no assignment: guard denies.
	viewer := user(unique("viewer") + "@contoso.example")
	kc := kubeconfigFor(t, ctx, mint(t, viewer))
	forbidden(t, ctx, kc, dataAction+"pods/read", "get", "pods", "-n", ns)

	// Viewer of ns, as an operator grants it.
	if _, err := shared.relay.Connectctl(ctx, "role", "assign", "--assignee", viewer.OID, "--role", "Viewer",
		"--cluster", clusterName, "--namespace", ns); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, kc, "get", "pods", "-n", ns)
	if out := kubectlOK(t, ctx, kc, "get", "pods", "-n", ns, "-o", "name"); !strings.Contains(out, "pod/pod1") {
		t.Errorf("get pods as a Viewer:\n%s", out)
	}
	forbidden(t, ctx, kc, dataAction+"secrets/read", "get", "secrets", "-n", ns)
	forbidden(t, ctx, kc, dataAction+"pods/read", "get", "pods", "-n", other)
	canI(t, ctx, kc, true, "get", "pods", "-n", ns)
	canI(t, ctx, kc, false, "get", "secrets", "-n", ns)
	canI(t, ctx, kc, false, "get", "pods", "-n", other)

	// A group assignment applies to the group's members.
	group := unique("grp-writers")
	member := user(unique("writer")+"@contoso.example", "grp-other", group)
	mkc := kubeconfigFor(t, ctx, mint(t, member))
	forbidden(t, ctx, mkc, dataAction+"configmaps/write", "create", "configmap", "cm0", "-n", ns, "--from-literal=a=b")
	if _, err := shared.relay.Connectctl(ctx, "role", "assign", "--assignee", group, "--assignee-type", "Group", "--role", "Writer",
		"--cluster", clusterName, "--namespace", ns); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, mkc, "create", "configmap", "made-by-writer", "-n", ns, "--from-literal=a=b")
	kubectlOK(t, ctx, mkc, "get", "configmap", "made-by-writer", "-n", ns)
	canI(t, ctx, mkc, true, "create", "configmaps", "-n", ns)
	forbidden(t, ctx, mkc, dataAction+"configmaps/write", "create", "configmap", "cm1", "-n", other, "--from-literal=a=b")
	// The Viewer is no member of the group.
	forbidden(t, ctx, kc, dataAction+"configmaps/write", "create", "configmap", "cm2", "-n", ns, "--from-literal=a=b")
}
