package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
	"github.com/clusterconnect/clusterconnect/test/proc"
)

// tunnelsOn returns each replica's tunnel count of the cluster (-1 for a
// replica that is down).
func tunnelsOn(t *testing.T, ctx context.Context) []int {
	t.Helper()
	out := make([]int, len(shared.relays))
	for i, r := range shared.relays {
		out[i] = -1
		if r.Proc.Exited() {
			continue
		}
		cl, err := r.Client()
		if err != nil {
			t.Fatal(err)
		}
		if v, err := cl.GetCluster(ctx, clusterName); err == nil {
			out[i] = v.Properties.Tunnels
		} else {
			t.Logf("replica %d: %v", i, err)
		}
	}
	return out
}

// TestTunnelsSpread: the load balancer put both of the agent's tunnels on
// replica 0; the relay told the agent which replica each reached, and the
// agent moved one to another replica.
func TestTunnelsSpread(t *testing.T) {
	ctx := harness.TestContext(t)
	var counts []int
	for {
		counts = tunnelsOn(t, ctx)
		spread := 0
		for _, n := range counts {
			if n > 0 {
				spread++
			}
		}
		if spread >= 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("tunnels per replica %v: still on one replica", counts)
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("tunnels per replica: %v", counts)
	// Each replica's view of the cluster lists every replica's tunnels
	// (connectctl show prints them), as the ownership records tell it.
	var want []int
	for _, n := range counts {
		if n > 0 {
			want = append(want, n)
		}
	}
	slices.Sort(want)
	for i, r := range shared.relays {
		cl, err := r.Client()
		if err != nil {
			t.Fatal(err)
		}
		for {
			var got []int
			v, err := cl.GetCluster(ctx, clusterName)
			if err == nil {
				for _, rt := range v.Properties.Replicas {
					got = append(got, rt.Tunnels)
				}
				slices.Sort(got)
				if slices.Equal(got, want) {
					break
				}
			}
			select {
			case <-ctx.Done():
				t.Fatalf("replica %d lists the fleet's tunnels as %v (%v), want %v", i, got, err, want)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// TestKubectlThroughEveryReplica: the same kubeconfig, only the server's
// host:port changed, works through each replica; those without a tunnel
// forward to one with (by host name: the kubeconfigs name the cluster by
// TLS server name).
func TestKubectlThroughEveryReplica(t *testing.T) {
	ctx := harness.TestContext(t)
	// Two tunnels over three replicas: one replica has none and must
	// forward (a move in progress briefly shows a third tunnel).
	var counts []int
	for {
		counts = tunnelsOn(t, ctx)
		if slices.Contains(counts, 0) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("tunnels per replica %v: no replica without a tunnel, nothing would be forwarded", counts)
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("tunnels per replica: %v", counts)
	for i, kc := range shared.kubecfgs {
		out, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "ns", "kube-system", "-o", "name")
		if err != nil || strings.TrimSpace(out) != "namespace/kube-system" {
			t.Errorf("kubectl through replica %d (%d tunnels): %v\n%s%s", i, counts[i], err, out, stderr)
		}
		// By path too (/clusters/<name>), as clients that ignore the
		// server name use it.
		if out, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "--raw", "/version", "--tls-server-name="); err != nil || !strings.Contains(out, "gitVersion") {
			t.Errorf("kubectl --raw through replica %d: %v\n%s%s", i, err, out, stderr)
		}
	}
}

// TestPeerIdentityIsVerified: the forwarded-principal header counts only
// from a replica's peer certificate of the relay CA.
func TestPeerIdentityIsVerified(t *testing.T) {
	ctx := harness.TestContext(t)
	r := shared.relays[0]
	cfg, err := r.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	forged := base64.RawURLEncoding.EncodeToString([]byte(`{"kind":"admin","id":"admin","name":"admin"}`))
	// A certificate of another CA that claims to be a peer.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{{Scheme: "clusterconnect", Host: "principal", Path: "/peer/evil"}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	for name, certs := range map[string][]tls.Certificate{
		"no certificate":             nil,
		"a foreign peer certificate": {{Certificate: [][]byte{der}, PrivateKey: key}},
	} {
		c := cfg.Clone()
		c.Certificates = certs
		tr := &http.Transport{TLSClientConfig: c}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/clusters/"+clusterName+"/api/v1/namespaces", nil)
		req.Header.Set(api.HeaderForwardedPrincipal, forged)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		tr.CloseIdleConnections()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s with a forged %s: HTTP %d, want 401", name, api.HeaderForwardedPrincipal, resp.StatusCode)
		}
	}
}

// TestOwnerKilled: SIGKILL a replica holding tunnels while a watch runs
// through another: new requests through the other replicas work again
// within seconds (another tunnel, or the agent's reconnect through the load
// balancer), and the watch either goes on or ends with an error kubectl
// reports; it never hangs.
func TestOwnerKilled(t *testing.T) {
	ctx := harness.TestContext(t)
	counts := tunnelsOn(t, ctx)
	victim, via := -1, -1
	for i, n := range counts {
		if n > 0 && victim < 0 {
			victim = i
		}
	}
	for i := range counts {
		if i != victim && (via < 0 || counts[i] == 0) {
			via = i
		}
	}
	if victim < 0 || via < 0 {
		t.Fatalf("tunnels per replica %v: nothing to kill", counts)
	}
	t.Logf("tunnels per replica %v: killing replica %d, requests through replica %d", counts, victim, via)
	cs, err := env.Cluster.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t, ctx)
	create := func(name string) {
		t.Helper()
		if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create("before")
	w, err := kubectl.Start(ctx, shared.kubecfgs[via], nil, "get", "configmaps", "-n", ns, "-w", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := w.WaitForStdout(ctx, "configmap/before"); err != nil {
		t.Fatal(err)
	}

	shared.relays[victim].Proc.Kill()
	killed := time.Now()
	defer func() {
		if err := shared.relays[victim].Start(ctx); err != nil {
			t.Errorf("restart replica %d: %v", victim, err)
		}
	}()
	var last string
	for {
		out, stderr, err := kubectl.Run(ctx, shared.kubecfgs[via], nil, nil, "get", "ns", "kube-system", "-o", "name", "--request-timeout=5s")
		if err == nil && strings.TrimSpace(out) == "namespace/kube-system" {
			break
		}
		last = fmt.Sprint(err, stderr)
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("no request through replica %d succeeded within 30 s of killing replica %d: %s", via, victim, last)
		}
	}
	t.Logf("requests work again %s after the kill (last failure: %s)", time.Since(killed).Round(10*time.Millisecond), orNone(last))

	// The watch: an event after the kill shows up, or kubectl has exited
	// with an error; within 30 s either way.
	create("after")
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	select {
	case <-w.Done():
		if err := w.Wait(ctx); err == nil {
			t.Error("the watch ended without an error when its replica's tunnel went")
		} else {
			t.Logf("the watch ended with an error kubectl reported: %v", err)
		}
	case <-waitOut(wctx, w, "configmap/after"):
		t.Log("the watch went on")
	case <-wctx.Done():
		t.Fatal("the watch hangs: no event, no exit, 30 s after the kill")
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func waitOut(ctx context.Context, w *kubectl.Process, s string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		if w.WaitForStdout(ctx, s) == nil {
			close(ch)
		}
	}()
	return ch
}

// TestDeleteClosesTunnelsOnEveryReplica: a cluster deleted through one
// replica loses its tunnels on every replica at once (the others learn it
// from their etcd watch), and is gone from all.
func TestDeleteClosesTunnelsOnEveryReplica(t *testing.T) {
	ctx := harness.TestContext(t)
	const name = "doomed"
	r0 := shared.relays[0]
	tok := r0.DataDir + "/" + name + ".token"
	if _, err := r0.Connectctl(ctx, "clusters", "create", name, "--token-file", tok); err != nil {
		t.Fatal(err)
	}
	shared.lb.Pin(2) // both tunnels on replica 0 first; the agent spreads them
	agent, err := env.StartAgent(ctx, &harness.Relay{URL: shared.lb.URL, DataDir: r0.DataDir}, harness.AgentOptions{Cluster: name, Tunnels: 2, TokenFile: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Stop()
	count := func() []int {
		out := make([]int, len(shared.relays))
		for i, r := range shared.relays {
			cl, err := r.Client()
			if err != nil {
				t.Fatal(err)
			}
			if v, err := cl.GetCluster(ctx, name); err == nil {
				out[i] = v.Properties.Tunnels
			} else {
				out[i] = -1
			}
		}
		return out
	}
	var before []int
	for {
		before = count()
		holders := 0
		for _, n := range before {
			if n > 0 {
				holders++
			}
		}
		if holders >= 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("tunnels per replica %v: not on two replicas", before)
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Delete through a replica that holds none of its tunnels: every other
	// one must close them, learning of the delete from its etcd watch. The
	// agent sees it: its tunnels close (and its reconnects are refused), so
	// its readiness turns 503.
	via := shared.relays[0]
	for i, n := range before {
		if n == 0 {
			via = shared.relays[i]
		}
	}
	health := agentHealth(t, ctx, agent)
	if code := status(ctx, health+"/readyz"); code != http.StatusOK {
		t.Fatalf("agent readiness %d before the delete", code)
	}
	if _, err := via.Connectctl(ctx, "delete", name); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for status(ctx, health+"/readyz") == http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("tunnels of %s per replica before the delete %v: the agent still has a tunnel 10 s after", name, before)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, n := range count() {
		if n != -1 {
			t.Errorf("replica %d still shows the deleted cluster (%d tunnels)", i, n)
		}
	}
}

// agentHealth is the agent's health listener (from its log).
func agentHealth(t *testing.T, ctx context.Context, agent *proc.Process) string {
	t.Helper()
	if err := harness.WaitLog(ctx, agent, "clusteragent started"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(agent.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`clusteragent started.* health=(\S+)`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatal("no health address in the agent's log")
	}
	return "http://" + m[1]
}

func status(ctx context.Context, u string) int {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// gauge reads one unlabelled gauge of replica r's /metrics.
func gauge(t *testing.T, ctx context.Context, r *harness.Relay, name string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.HealthURL+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatalf("no %s in %s/metrics", name, r.HealthURL)
	return 0
}

// TestRollingRestart restarts every replica in turn (SIGTERM: drain) under
// a steady loop of kubectl requests through the load balancer: a draining
// replica withdraws its tunnel ownership and tells its agents to move first,
// requests it still gets go to the replicas that have the tunnels, so the
// loop sees no failure beyond a request in flight at the moment a replica's
// listener closed.
func TestRollingRestart(t *testing.T) {
	ctx := harness.TestContext(t)
	cfg, err := clientcmd.LoadFromFile(shared.kubecfgs[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = strings.Replace(c.Server, shared.relays[0].URL, shared.lb.URL, 1)
	}
	kc := filepath.Join(t.TempDir(), "lb.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kc); err != nil {
		t.Fatal(err)
	}
	// The first request also fetches the relay client certificate (the
	// kubeconfig's exec plugin); let the tunnels settle after the tests
	// before.
	for attempt := 0; ; attempt++ {
		out, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "ns", "kube-system", "-o", "name", "-v=4")
		if err == nil {
			break
		}
		if attempt == 5 {
			t.Fatalf("through the load balancer: %v\n%s%s", err, out, stderr)
		}
		t.Logf("through the load balancer, attempt %d: %v %s", attempt, err, stderr)
		time.Sleep(300 * time.Millisecond)
	}
	stop := make(chan struct{})
	type result struct {
		ok       int
		failures []string
	}
	res := make(chan result)
	go func() {
		var r result
		for {
			select {
			case <-stop:
				res <- r
				return
			default:
			}
			out, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "ns", "kube-system", "-o", "name", "--request-timeout=10s")
			if err == nil && strings.TrimSpace(out) == "namespace/kube-system" {
				r.ok++
			} else {
				r.failures = append(r.failures, fmt.Sprintf("%s: %v %s", time.Now().Format("15:04:05.000"), err, strings.TrimSpace(stderr)))
			}
		}
	}()
	for i, r := range shared.relays {
		t.Logf("%s restarting replica %d (tunnels per replica %v)", time.Now().Format("15:04:05.000"), i, tunnelsOn(t, ctx))
		r.Stop()
		if err := r.Start(ctx); err != nil {
			t.Fatalf("restart replica %d: %v", i, err)
		}
		// The next restart only once the agent has its two tunnels on two
		// replicas again.
		for {
			holders, total := 0, 0
			for _, n := range tunnelsOn(t, ctx) {
				if n > 0 {
					holders++
					total += n
				}
			}
			if holders >= 2 && total >= 2 {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("after restarting replica %d the tunnels did not come back on two replicas: %v", i, tunnelsOn(t, ctx))
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	close(stop)
	r := <-res
	t.Logf("%d requests succeeded during the rolling restart, %d failed", r.ok, len(r.failures))
	for _, f := range r.failures {
		t.Log("failed: ", f)
	}
	if r.ok == 0 || len(r.failures) > len(shared.relays) {
		t.Errorf("%d failed requests (at most one in flight per restarted replica allowed), %d succeeded", len(r.failures), r.ok)
	}
}

// TestDrainMovesAgentsFirst: a replica told to stop (SIGTERM) while a watch
// runs through its tunnel tells its agents to move at once: their new
// tunnel is up on another replica while the draining one still waits for
// the watch (up to its shutdown timeout), not after it.
func TestDrainMovesAgentsFirst(t *testing.T) {
	ctx := harness.TestContext(t)
	counts := tunnelsOn(t, ctx)
	x := -1
	for i, n := range counts {
		if n > 0 {
			x = i
			break
		}
	}
	if x < 0 {
		t.Fatalf("tunnels per replica %v", counts)
	}
	others := func() int {
		total := 0
		for i, n := range tunnelsOn(t, ctx) {
			if i != x && n > 0 {
				total += n
			}
		}
		return total
	}
	r := shared.relays[x]
	// The watch's stream must be on replica x's tunnel (not forwarded: the
	// agent may still be moving a tunnel after the tests before).
	var w *kubectl.Process
	var before int
	for attempt := 0; ; attempt++ {
		before = others()
		var err error
		if w, err = kubectl.Start(ctx, shared.kubecfgs[x], nil, "get", "ns", "-w", "-o", "name"); err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		if err := w.WaitForStdout(ctx, "namespace/kube-system"); err != nil {
			t.Fatal(err)
		}
		n := gauge(t, ctx, r, "relay_tunnel_streams_open")
		if n >= 1 && tunnelsOn(t, ctx)[x] > 0 {
			break
		}
		if attempt == 10 {
			t.Fatalf("the watch never ran on replica %d's tunnels (%d streams open there)", x, n)
		}
		w.Stop()
		time.Sleep(500 * time.Millisecond)
	}
	if err := syscall.Kill(r.Proc.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	defer func() {
		<-r.Proc.Done()
		if err := r.Start(ctx); err != nil {
			t.Errorf("restart replica %d: %v", x, err)
		}
	}()
	for others() <= before {
		if r.Proc.Exited() {
			t.Fatalf("replica %d finished draining before its agent's tunnel moved (others hold %d, %d before)", x, others(), before)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Seen moved: the draining replica must still be up (the watch holds
	// it for its 3 s shutdown timeout).
	if r.Proc.Exited() {
		t.Fatalf("the tunnel moved only as replica %d ended its drain", x)
	}
	t.Logf("the tunnel moved while replica %d still drained (others hold %d, %d before)", x, others(), before)
}

// TestFullRestartLosesNothing stops every replica and every etcd member,
// starts them all again, and finds the cluster, its identity (the agent's
// certificate still admits its tunnels), a role assignment and an API token
// as they were.
func TestFullRestartLosesNothing(t *testing.T) {
	ctx := harness.TestContext(t)
	r0 := shared.relays[0]
	if _, err := r0.Connectctl(ctx, "role", "assign", "--assignee", "00000000-0000-0000-0000-0000000000aa", "--role", "Viewer", "--cluster", clusterName); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "ci.token")
	if _, err := r0.Connectctl(ctx, "tokens", "create", "--name", "survivor", "--role", "Reader", "--expires", "1h", "--token-file", tokFile); err != nil {
		t.Fatal(err)
	}
	snapshot := func(r *harness.Relay) string {
		t.Helper()
		var b strings.Builder
		for _, args := range [][]string{{"role", "list", "--cluster", clusterName}, {"tokens", "list"}} {
			out, err := r.Connectctl(ctx, args...)
			if err != nil {
				t.Fatal(err)
			}
			// The first column of each row (IDs and names): relative times
			// in the others move on.
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if f := strings.Fields(line); len(f) > 0 {
					b.WriteString(f[0] + "\n")
				}
			}
		}
		return b.String()
	}
	before := snapshot(r0)
	t.Logf("assignments and tokens (first columns):\n%s", before)
	if strings.Count(before, "\n") < 4 {
		t.Fatalf("before the restart:\n%s", before)
	}
	for _, r := range shared.relays {
		r.Stop()
	}
	shared.etcd.Stop()
	if err := shared.etcd.RestartAll(ctx); err != nil {
		t.Fatal(err)
	}
	for i, r := range shared.relays {
		if err := r.Start(ctx); err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	if after := snapshot(shared.relays[2]); after != before {
		t.Errorf("assignments and tokens changed across the restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The agent reconnects with the certificate it had: its identity
	// (cluster, certificate generation) survived.
	if err := waitTunnels(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if out, stderr, err := kubectl.Run(ctx, shared.kubecfgs[2], nil, nil, "get", "ns", "kube-system", "-o", "name"); err != nil {
		t.Fatalf("kubectl after the full restart: %v\n%s%s", err, out, stderr)
	}
}
