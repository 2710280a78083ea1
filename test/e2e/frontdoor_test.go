package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
)

// relayMetric reads one sample of the relay's /metrics (health listener).
func relayMetric(t *testing.T, r *harness.Relay, name string) float64 {
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
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// getStatus sends GET url with tlsCfg and an optional bearer token, and
// decodes the Status answer.
func getStatus(t *testing.T, ctx context.Context, tlsCfg *tls.Config, url, bearer string) (int, api.Status) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st api.Status
	json.NewDecoder(resp.Body).Decode(&st)
	return resp.StatusCode, st
}

// Without a relay identity the relay answers 401 itself — by path and by
// server name, anonymous or with a valid service-account token alone — and
// opens no stream to the cluster's agent.
func TestNoRelayIdentityGets401(t *testing.T) {
	ctx := harness.TestContext(t)
	r := shared.relay
	const streams = "relay_tunnel_stream_dial_seconds_count"
	before := relayMetric(t, r, streams)
	plain, err := r.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	bySNI := plain.Clone()
	bySNI.ServerName = "e2e.clusters.relay.internal"
	for _, c := range []struct {
		name   string
		tls    *tls.Config
		url    string
		bearer string
	}{
		{"anonymous", plain, r.URL + "/clusters/e2e/version", ""},
		{"service-account token alone", plain, r.URL + "/clusters/e2e/version", shared.saToken},
		{"anonymous by server name", bySNI, r.URL + "/version", ""},
		{"service-account token alone by server name", bySNI, r.URL + "/api/v1/namespaces", shared.saToken},
	} {
		code, st := getStatus(t, ctx, c.tls, c.url, c.bearer)
		if code != 401 || st.Reason != api.ReasonUnauthenticated || !strings.Contains(st.Message, "relay identity") {
			t.Errorf("%s: %d %+v, want 401 saying a relay identity is needed", c.name, code, st)
		}
	}
	if after := relayMetric(t, r, streams); after != before {
		t.Errorf("refused requests opened %v streams to the agent", after-before)
	}
	// The same token with the relay client certificate beside it works.
	cfg, err := r.DataTLSConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code, st := getStatus(t, ctx, cfg, r.URL+"/clusters/e2e/api", shared.saToken); code != 200 {
		t.Errorf("with the relay client certificate: %d %+v", code, st)
	}
}

// Clients that drop the server URL's path reach the cluster: the issued
// kubeconfig names it by TLS server name (kubernetes/kubectl#1676 for --raw,
// kubectl proxy without --append-server-path).
func TestClientsWithoutPathPrefix(t *testing.T) {
	ctx := harness.TestContext(t)
	if out := run(t, ctx, "get", "--raw", "/version"); !strings.Contains(out, `"gitVersion"`) {
		t.Errorf("kubectl get --raw /version: %s", out)
	}
	// A client that ignores tls-server-name (many non-Go clients) reaches
	// the cluster by the server URL's path.
	cfg, err := clientcmd.LoadFromFile(shared.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.TLSServerName = ""
	}
	byPath := filepath.Join(t.TempDir(), "by-path.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, byPath); err != nil {
		t.Fatal(err)
	}
	if out, stderr, err := kubectl.Run(ctx, byPath, nil, nil, "get", "ns", "kube-system", "-o", "name"); err != nil || !strings.Contains(out, "namespace/kube-system") {
		t.Errorf("without tls-server-name: %v %s\n%s", err, out, stderr)
	}
	p, err := kubectl.Start(ctx, shared.kubeconfig, nil, "proxy", "--port", "0")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if err := p.WaitForStdout(ctx, "Starting to serve on"); err != nil {
		t.Fatal(err)
	}
	addr := regexp.MustCompile(`Starting to serve on (\S+)`).FindStringSubmatch(p.Stdout())[1]
	resp, err := http.Get("http://" + addr + "/api/v1/namespaces/kube-system")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"name":"kube-system"`) {
		t.Errorf("through kubectl proxy: %d %s", resp.StatusCode, b)
	}
}

// Management roles through connectctl: a Reader API token lists but cannot
// create; once revoked it stops working; the audit log shows who did what.
func TestAPITokensAndAudit(t *testing.T) {
	ctx := harness.TestContext(t)
	r := shared.relay
	dir := t.TempDir()
	tokFile, cfg := filepath.Join(dir, "token"), filepath.Join(dir, "reader.yaml")
	out, err := r.Connectctl(ctx, "tokens", "create", "--name", "e2e-reader", "--role", "Reader", "--expires", "1h", "--token-file", tokFile)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`ID (\w+), role Reader`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("tokens create: %s", out)
	}
	tok := api.APIToken{ID: m[1]}
	reader := func(args ...string) (string, error) {
		return r.Connectctl(ctx, append([]string{"--config", cfg}, args...)...)
	}
	if out, err := reader("login", "--relay", r.URL, "--ca-file", r.CAFile(), "--token-file", tokFile); err != nil || !strings.Contains(out, "Reader") {
		t.Fatalf("login with the Reader token: %v\n%s", err, out)
	}
	if _, err := reader("list"); err != nil {
		t.Errorf("a Reader lists: %v", err)
	}
	if out, err := reader("clusters", "create", "reader-made"); err == nil || !strings.Contains(out, "does not allow") {
		t.Errorf("a Reader created a cluster: %v\n%s", err, out)
	}
	if _, err := r.Connectctl(ctx, "tokens", "revoke", tok.ID); err != nil {
		t.Fatal(err)
	}
	if out, err := reader("list"); err == nil || !strings.Contains(out, "not known to this relay") {
		t.Errorf("a revoked token still works: %v\n%s", err, out)
	}

	run(t, ctx, "get", "--raw", "/api/v1/namespaces/default")
	out, err = r.Connectctl(ctx, "audit", "--cluster", "e2e", "--since", "10m", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var recs api.AuditList
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("audit -o json: %v\n%s", err, out)
	}
	found := false
	for _, rec := range recs.Value {
		if rec.Path == "/api/v1/namespaces/default" && rec.Status == 200 && rec.Principal.Kind == api.PrincipalKindAdmin && rec.Client == "127.0.0.1" {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit record of the kubectl request with the admin's identity:\n%s", out)
	}
}
