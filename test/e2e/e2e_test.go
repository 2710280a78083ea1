package e2e

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
)

// run runs kubectl with the relay-issued kubeconfig.
func run(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, stderr, err := kubectl.Run(ctx, shared.kubeconfig, nil, nil, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

func TestKubeconfigPointsAtRelay(t *testing.T) {
	cfg, err := clientcmd.LoadFromFile(shared.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
	// The cluster is named by the TLS server name, so clients that drop the
	// server URL's path (kubectl --raw before 1.34, kubectl proxy) reach it.
	// Clients that ignore tls-server-name reach it by the server URL's path.
	if want := shared.relay.URL + "/clusters/e2e"; c.Server != want || c.TLSServerName != "e2e.clusters.relay.internal" {
		t.Fatalf("kubeconfig server = %q, tls-server-name %q; want %q and e2e.clusters.relay.internal", c.Server, c.TLSServerName, want)
	}
	u := cfg.AuthInfos[cfg.Contexts[cfg.CurrentContext].AuthInfo]
	if u.Token != "" || u.Exec == nil || u.Exec.Args[0] != "kube-credential" {
		t.Fatalf("kubeconfig user should run connectctl kube-credential (token mode): %+v", u)
	}
	ca, _ := os.ReadFile(shared.relay.CAFile())
	if string(c.CertificateAuthorityData) != string(ca) {
		t.Fatal("kubeconfig does not carry the relay CA")
	}
}

// proxied200 reads the relay's count of proxied requests answered 200.
func proxied200(t *testing.T, r *harness.Relay) float64 {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(r.HealthURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, `relay_proxy_requests_total{code="200"} `); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func TestGetNamespaces(t *testing.T) {
	ctx := harness.TestContext(t)
	before := proxied200(t, shared.relay)
	out := run(t, ctx, "get", "ns", "-o", "name")
	for _, want := range []string{"namespace/default", "namespace/kube-system"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get ns through the relay: missing %s in\n%s", want, out)
		}
	}
	v := run(t, ctx, "version", "-o", "json")
	if !strings.Contains(v, `"gitVersion": "v1.37.2"`) {
		t.Errorf("server version through the relay:\n%s", v)
	}
	// It really went through the relay: its proxy counted the requests.
	if after := proxied200(t, shared.relay); after < before+2 {
		t.Errorf("relay proxied %v requests answered 200 during kubectl get ns + version, want at least 2", after-before)
	}
}

const manifest = `apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: app-secret
stringData:
  password: s3cr3t
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
---
apiVersion: v1
kind: Service
metadata:
  name: app
spec:
  ports:
  - port: 80
`

func TestApplyGetDelete(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	f := filepath.Join(t.TempDir(), "app.yaml")
	os.WriteFile(f, []byte(manifest), 0o600)
	out := run(t, ctx, "apply", "-n", ns, "-f", f)
	for _, want := range []string{"configmap/app-config created", "secret/app-secret created", "serviceaccount/app created", "service/app created"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	if got := run(t, ctx, "get", "-n", ns, "configmap", "app-config", "-o", "jsonpath={.data.greeting}"); got != "hello" {
		t.Errorf("configmap data through the relay = %q", got)
	}
	// Applying again is a no-op, as kubectl reports.
	if out := run(t, ctx, "apply", "-n", ns, "-f", f); !strings.Contains(out, "configmap/app-config unchanged") {
		t.Errorf("second apply:\n%s", out)
	}
	out = run(t, ctx, "delete", "-n", ns, "-f", f)
	if !strings.Contains(out, `configmap "app-config" deleted`) {
		t.Errorf("delete output:\n%s", out)
	}
	cs, _ := env.Cluster.Clientset()
	if _, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "app-config", metav1.GetOptions{}); err == nil {
		t.Error("configmap still exists after kubectl delete through the relay")
	}
}

func TestPaginatedList(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	cs, err := env.Cluster.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%04d", i)}, Data: map[string]string{"i": fmt.Sprint(i)}}
				if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	out, stderr, err := kubectl.Run(ctx, shared.kubeconfig, nil, nil, "get", "configmaps", "-n", ns, "-o", "name", "--chunk-size=300", "-v=6")
	if err != nil {
		t.Fatalf("kubectl get configmaps: %v\n%s", err, stderr)
	}
	if got := strings.Count(out, "configmap/cm-"); got != n {
		t.Errorf("listed %d configmaps through the relay, want %d", got, n)
	}
	// kubectl paged through them: one request per chunk, with continue tokens.
	if pages := strings.Count(stderr, "continue="); pages < n/300 {
		t.Errorf("kubectl made %d continue requests, want at least %d (paginated list)", pages, n/300)
	}
}

func TestWatchSeesLaterObjects(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	cs, _ := env.Cluster.Clientset()
	create := func(name string) {
		t.Helper()
		if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create("before-watch")
	w, err := kubectl.Start(ctx, shared.kubeconfig, nil, "get", "configmaps", "-n", ns, "-w", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := w.WaitForStdout(ctx, "configmap/before-watch"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		name := fmt.Sprintf("after-watch-%d", i)
		create(name)
		// Each event is flushed through relay and tunnel while the watch stays open.
		if err := w.WaitForStdout(ctx, "configmap/"+name); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnknownClusterIs404(t *testing.T) {
	ctx := harness.TestContext(t)
	cfg, _ := clientcmd.LoadFromFile(shared.kubeconfig)
	for _, c := range cfg.Clusters {
		c.Server = shared.relay.URL + "/clusters/no-such-cluster"
		c.TLSServerName = "no-such-cluster.clusters.relay.internal"
	}
	path := filepath.Join(t.TempDir(), "kc")
	clientcmd.WriteToFile(*cfg, path)
	if _, stderr, err := kubectl.Run(ctx, path, nil, nil, "get", "ns"); err == nil || !strings.Contains(stderr, "NotFound") {
		t.Fatalf("kubectl get ns on an unknown cluster: err=%v stderr=%s", err, stderr)
	}
	// kubectl's discovery hides a 404's message; a raw GET shows the
	// relay's Status (the caller is the admin, an Owner: it may know).
	_, stderr, err := kubectl.Run(ctx, path, nil, nil, "get", "--raw", "/api/v1/namespaces")
	if err == nil || !strings.Contains(stderr, "Error from server (NotFound)") || !strings.Contains(stderr, `cluster "no-such-cluster" is not registered with this relay`) {
		t.Fatalf("kubectl on an unknown cluster: err=%v stderr=%s", err, stderr)
	}
}

func TestAgentKilledGives503(t *testing.T) {
	ctx := harness.TestContext(t)
	a, kc := connect(t, ctx, shared.relay, "killed")
	if _, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "ns"); err != nil {
		t.Fatalf("before the kill: %v\n%s", err, stderr)
	}
	a.Kill() // SIGKILL: no drain, no goodbye
	_, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "ns", "--request-timeout=30s")
	if err == nil || !strings.Contains(stderr, "cluster killed is not connected") {
		t.Fatalf("kubectl after the agent was killed: err=%v stderr=%s", err, stderr)
	}
	if !strings.Contains(stderr, "ServiceUnavailable") {
		t.Errorf("want a 503 ServiceUnavailable Status, kubectl printed: %s", stderr)
	}
}

func TestRelayRestartAgentReconnects(t *testing.T) {
	ctx := harness.TestContext(t)
	r := startRelay(t, ctx, &harness.RelayOptions{DataDir: filepath.Join(env.Dir, "relay-restart")})
	a, kc := connect(t, ctx, r, "restart")
	if _, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "ns"); err != nil {
		t.Fatalf("before the restart: %v\n%s", err, stderr)
	}
	r.Stop()
	if err := r.Start(ctx); err != nil { // same port, same state
		t.Fatal(err)
	}
	// The agent reconnects and kubectl works again within 10 s.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "ns", "--request-timeout=5s")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubectl still failing 10 s after the relay restarted: %v\n%s\nagent log:\n%s", err, stderr, a.Tail(20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAgentRefusesTargetsOffItsAllowList plays the relay itself, so that it
// can ask the real agent binary for streams the relay never asks for.
func TestAgentRefusesTargetsOffItsAllowList(t *testing.T) {
	ctx := harness.TestContext(t)
	caCert, caKey, err := clusterca.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := clusterca.Load(caCert, caKey)
	sessions := make(chan *tunnel.Session, 2)
	mux := http.NewServeMux()
	// Just enough of the relay's enrolment for the agent to get an identity.
	mux.HandleFunc("POST /agent/v1/enroll", func(w http.ResponseWriter, r *http.Request) {
		var req api.EnrollRequest
		json.NewDecoder(r.Body).Decode(&req)
		csr, err := clusterca.ParseCSR([]byte(req.CSR))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		certPEM, cert, _ := ca.Issue(csr, clusterca.Identity{Cluster: req.Cluster, UID: "u", Generation: 1}, time.Now(), time.Hour)
		json.NewEncoder(w).Encode(api.CertificateResponse{Certificate: string(certPEM), NotAfter: cert.NotAfter.UTC().Format(time.RFC3339)})
	})
	mux.HandleFunc("GET /agent/v1/clusters/{name}/tunnel", func(w http.ResponseWriter, r *http.Request) {
		s, err := tunnel.Accept(w, r, nil)
		if err != nil {
			return
		}
		sessions <- s
		<-s.Done()
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = false
	srv.StartTLS()
	defer srv.Close()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("any"), 0o600)
	fake := &harness.Relay{URL: srv.URL, DataDir: dir} // its CAFile is caFile
	opts := agent("allow", 1)
	opts.TokenFile = token
	a, err := env.StartAgent(ctx, fake, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	var s *tunnel.Session
	select {
	case s = <-sessions:
	case <-ctx.Done():
		t.Fatalf("agent never connected:\n%s", a.Tail(20))
	}
	defer s.Close()
	for _, target := range []string{"10.0.0.1:22", "127.0.0.1:22", strings.TrimPrefix(env.Cluster.URL, "https://"), "metadata"} {
		_, err := s.Open(ctx, target)
		var se *tunnel.StreamError
		if !errors.As(err, &se) || se.Code != tunnel.CodeTargetNotAllowed {
			t.Errorf("stream to %q: %v, want the agent to refuse it as not allowed", target, err)
		}
	}
	// The allowed target still works on the same tunnel.
	c, err := s.Open(ctx, "kube")
	if err != nil {
		t.Fatalf("stream to kube: %v", err)
	}
	c.Close()
}
