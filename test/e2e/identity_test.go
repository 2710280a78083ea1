package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
	"github.com/clusterconnect/clusterconnect/test/proc"
)

// waitLog waits until the process log contains substr.
func waitLog(t *testing.T, ctx context.Context, p *proc.Process, substr string) {
	t.Helper()
	if err := harness.WaitLog(ctx, p, substr); err != nil {
		t.Fatal(err)
	}
}

func TestEnrolmentStoresIdentitySecret(t *testing.T) {
	ctx := harness.TestContext(t)
	cs, _ := env.Cluster.Clientset()
	sec, err := cs.CoreV1().Secrets("agent-e2e").Get(ctx, "clusterconnect-identity", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("identity Secret of the connected cluster: %v", err)
	}
	if sec.Type != corev1.SecretTypeTLS || len(sec.Data["tls.key"]) == 0 || len(sec.Data["ca.crt"]) == 0 {
		t.Fatalf("identity Secret: type %s, keys %v", sec.Type, keys(sec.Data))
	}
	blk, _ := pem.Decode(sec.Data["tls.crt"])
	if blk == nil {
		t.Fatal("tls.crt is not PEM")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "e2e" || len(cert.URIs) != 1 || !strings.HasPrefix(cert.URIs[0].String(), "clusterconnect://cluster/e2e/") {
		t.Errorf("certificate identity: CN %q URIs %v", cert.Subject.CommonName, cert.URIs)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestAgentRestartReusesIdentity(t *testing.T) {
	ctx := harness.TestContext(t)
	r := shared.relay
	a, err := r.ConnectCluster(ctx, agent("restarts", 1))
	if err != nil {
		t.Fatal(err)
	}
	a.Stop()
	if err := r.WaitTunnels(ctx, "restarts", 0); err != nil {
		t.Fatal(err)
	}
	// The token file still holds the used token: enrolling again would be
	// refused, so connecting proves the Secret was reused.
	a, err = env.StartAgent(ctx, r, agent("restarts", 1)) // with <DataDir>/restarts.token
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	if err := r.WaitTunnels(ctx, "restarts", 1); err != nil {
		t.Fatalf("%v\nagent log:\n%s", err, a.Tail(20))
	}
	if strings.Contains(a.Tail(400), "registration token already used") {
		t.Fatal("the restarted agent tried to enrol again")
	}
}

func TestRegistrationTokenRefusals(t *testing.T) {
	ctx := harness.TestContext(t)
	r := shared.relay
	// Reuse: a second agent (another namespace, so no Secret) with a token
	// that was already used.
	a, err := r.ConnectCluster(ctx, agent("reuse", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	reuse := agent("reuse", 1) // with <DataDir>/reuse.token
	reuse.ExtraArgs = []string{"--namespace", "agent-reuse-2", "--identity-secret", "other"}
	second, err := env.StartAgent(ctx, r, reuse)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Stop()
	env.Cluster.CreateNamespace(ctx, "agent-reuse-2")
	waitLog(t, ctx, second, "registration token already used")

	// Expiry: a token with a 1 s lifetime, used after it ended.
	tok := filepath.Join(r.DataDir, "late.token")
	if _, err := r.Connectctl(ctx, "clusters", "create", "late", "--token-file", tok, "--token-ttl", "1s"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // let the token's lifetime pass (wall clock, not speed)
	// The agent reads tok, <DataDir>/late.token.
	late, err := env.StartAgent(ctx, r, agent("late", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer late.Stop()
	waitLog(t, ctx, late, "registration token expired on")
	// A fresh token re-registers it without restarting the agent.
	if _, err := r.Connectctl(ctx, "clusters", "token", "late", "--token-file", tok); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitTunnels(ctx, "late", 1); err != nil {
		t.Fatalf("%v\nagent log:\n%s", err, late.Tail(20))
	}
}

func TestDeleteClosesTunnelsAndRefusesReconnect(t *testing.T) {
	ctx := harness.TestContext(t)
	r := shared.relay
	a, err := r.ConnectCluster(ctx, agent("doomed", 2))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	if _, err := r.Connectctl(ctx, "clusters", "delete", "doomed"); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitGone(ctx, "doomed"); err != nil {
		t.Fatal(err)
	}
	waitLog(t, ctx, a, `cluster \"doomed\" is not registered with this relay`)
}

// TestRotationKeepsWatchStreaming runs its own relay with 30 s certificates:
// the agent renews at 20 s and moves its tunnels to the new certificate while
// a watch that started before keeps delivering events.
func TestRotationKeepsWatchStreaming(t *testing.T) {
	ctx := harness.TestContext(t)
	r := startRelay(t, ctx, &harness.RelayOptions{DataDir: filepath.Join(env.Dir, "relay-rotation"), ExtraArgs: []string{"--cert-lifetime", "30s"}})
	a, kc := connect(t, ctx, r, "rotating")
	ns := env.Namespace(t, ctx)
	cs, _ := env.Cluster.Clientset()
	create := func(name string) {
		t.Helper()
		if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	w, err := kubectl.Start(ctx, kc, nil, "get", "configmaps", "-n", ns, "-w", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	create("before-rotation")
	if err := w.WaitForStdout(ctx, "configmap/before-rotation"); err != nil {
		t.Fatal(err)
	}
	// The watch's tunnel drains until the old certificate expires (10 s after
	// the rotation here; 30 days with the default lifetime).
	waitLog(t, ctx, a, "certificate rotated; moving the tunnels to it")
	for i := range 3 {
		name := fmt.Sprintf("after-rotation-%d", i)
		create(name)
		if err := w.WaitForStdout(ctx, "configmap/"+name); err != nil {
			t.Fatalf("watch stopped streaming across the rotation: %v", err)
		}
	}
	select {
	case <-w.Done():
		t.Fatalf("kubectl get -w ended: %s", w.Stderr())
	default:
	}
	// New requests use the new tunnels.
	if _, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "ns"); err != nil {
		t.Fatalf("after rotation: %v\n%s", err, stderr)
	}
}
