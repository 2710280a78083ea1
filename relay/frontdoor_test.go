package relay_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/relay/audit"
	"github.com/clusterconnect/clusterconnect/relay/limits"
	"github.com/clusterconnect/clusterconnect/relay/secret"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// counted is an upstream that counts the requests that reach it.
func counted(t *testing.T, n *atomic.Int64) string {
	return upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		fmt.Fprintf(w, "%s xff=%s", r.URL.Path, r.Header.Get("X-Forwarded-For"))
	})).URL
}

func do(t *testing.T, c *http.Client, method, url string, hdr map[string]string) (int, string, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var st struct{ Kind, Reason, Message string }
	if json.Unmarshal(b, &st) == nil && st.Kind == "Status" {
		return resp.StatusCode, st.Reason, st.Message, resp.Header
	}
	return resp.StatusCode, "", string(b), resp.Header
}

// A request without a relay identity, or with one that does not verify,
// gets 401 from the relay, and nothing reaches the cluster.
func TestAdmissionRefusesWithoutIdentity(t *testing.T) {
	e := newEnv(t)
	var hits atomic.Int64
	id := e.identity("c1")
	e.agent("c1", id, counted(t, &hits), 1)
	e.waitConnected("c1", 1)
	u := e.ts.URL + "/clusters/c1/version"
	forged := "eyJhbGciOiJSUzI1NiIsImtpZCI6InVua25vd24ifQ.eyJpc3MiOiJodHRwczovL2xvZ2luLm1pY3Jvc29mdG9ubGluZS5jb20vdC92Mi4wIn0.c2ln"
	for _, c := range []struct {
		name   string
		client *http.Client
		hdr    map[string]string
		want   string
	}{
		{"anonymous", e.client(), nil, "no credential"},
		{"service-account token alone", e.client(), map[string]string{"Authorization": "Bearer " + forged}, "relay identity"},
		{"admin token as bearer", e.client(), map[string]string{"Authorization": "Bearer " + adminToken}, "relay identity"},
		{"cluster certificate", e.client(id.Certificates...), nil, "not a relay client certificate"},
	} {
		code, reason, msg, _ := do(t, c.client, "GET", u, c.hdr)
		if code != 401 || reason != api.ReasonUnauthenticated || !strings.Contains(msg, c.want) {
			t.Errorf("%s: %d %s %q, want 401 mentioning %q", c.name, code, reason, msg, c.want)
		}
	}
	short := e.client(e.principalCert(api.Principal{Kind: api.PrincipalKindAdmin, ID: "admin"}, time.Hour))
	e.advance(2 * time.Hour)
	if code, reason, msg, _ := do(t, short, "GET", u, nil); code != 401 || reason != api.ReasonUnauthenticated || !strings.Contains(msg, "expired") {
		t.Errorf("expired relay certificate: %d %s %q", code, reason, msg)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("%d refused requests reached the cluster", n)
	}
	// The admin's relay client certificate is admitted; the address the
	// relay saw replaces a forged X-Forwarded-For.
	code, _, body, _ := do(t, e.ts.Client(), "GET", u, map[string]string{"X-Forwarded-For": "203.0.113.9"})
	if code != 200 || body != "/version xff=127.0.0.1" {
		t.Errorf("admin: %d %q, want 200 \"/version xff=127.0.0.1\"", code, body)
	}
}

// assign stores a role assignment directly.
func (e *env) assignUntil(role, principal, cluster string, expires time.Time) {
	e.t.Helper()
	a := &store.RoleAssignment{ID: secret.Random(8), Role: role, PrincipalID: principal, PrincipalType: api.PrincipalUser, Cluster: cluster, CreatedAt: e.clock(), ExpiresAt: expires}
	if err := e.st.CreateAssignment(context.Background(), a); err != nil {
		e.t.Fatal(err)
	}
}

// A user needs a role assignment on the cluster; an unknown cluster and a
// forbidden one answer alike; a time-bound assignment stops at its end.
func TestAdmissionByRoleAssignment(t *testing.T) {
	e := newEnv(t)
	var hits atomic.Int64
	e.agent("c1", e.identity("c1"), counted(t, &hits), 1)
	e.identity("c2")
	e.waitConnected("c1", 1)
	alice := e.client(e.principalCert(api.Principal{Kind: api.PrincipalKindUser, ID: "oid-alice", Name: "alice@contoso.example"}, 2*time.Hour))

	code, reason, forbidden, _ := do(t, alice, "GET", e.ts.URL+"/clusters/c1/version", nil)
	if code != 403 || reason != api.ReasonForbidden || !strings.Contains(forbidden, "may not connect") {
		t.Fatalf("without an assignment: %d %s %q", code, reason, forbidden)
	}
	_, _, unknown, _ := do(t, alice, "GET", e.ts.URL+"/clusters/nope/version", nil)
	if strings.ReplaceAll(unknown, "nope", "c1") != forbidden {
		t.Errorf("unknown cluster answers differently from a forbidden one:\n%q\n%q", unknown, forbidden)
	}
	if hits.Load() != 0 {
		t.Fatal("a refused request reached the cluster")
	}
	// Viewer of c1 for 30 minutes: c1 yes, c2 no; after the end, no.
	e.assignUntil(api.RoleViewer, "oid-alice", "c1", e.clock().Add(30*time.Minute))
	e.srv.ForgetDecisions()
	if code, _, msg, _ := do(t, alice, "GET", e.ts.URL+"/clusters/c1/version", nil); code != 200 {
		t.Errorf("Viewer on c1: %d %q", code, msg)
	}
	if code, _, _, _ := do(t, alice, "GET", e.ts.URL+"/clusters/c2/version", nil); code != 403 {
		t.Errorf("Viewer on c1, asking for c2: %d, want 403", code)
	}
	e.advance(31 * time.Minute)
	if code, _, msg, _ := do(t, alice, "GET", e.ts.URL+"/clusters/c1/version", nil); code != 403 {
		t.Errorf("after the assignment expired: %d %q, want 403", code, msg)
	}
}

// Over its rate, a caller gets 429 with Retry-After; another caller is not
// affected.
func TestAdmissionLimits(t *testing.T) {
	e := newEnvConfig(t, relay.Config{Tunnel: testTunnel(), Limits: &limits.Config{CallerRate: 1, CallerBurst: 2, IdleAfter: time.Hour}})
	var hits atomic.Int64
	e.agent("c1", e.identity("c1"), counted(t, &hits), 1)
	e.waitConnected("c1", 1)
	u := e.ts.URL + "/clusters/c1/version"
	var last int
	var hdr http.Header
	var reason string
	for range 5 {
		last, reason, _, hdr = do(t, e.ts.Client(), "GET", u, nil)
	}
	if last != 429 || reason != api.ReasonCallerLimited || hdr.Get("Retry-After") == "" {
		t.Errorf("over the caller rate: %d %s Retry-After=%q", last, reason, hdr.Get("Retry-After"))
	}
	e.assignUntil(api.RoleViewer, "oid-bob", "c1", time.Time{})
	bob := e.client(e.principalCert(api.Principal{Kind: api.PrincipalKindUser, ID: "oid-bob"}, time.Hour))
	if code, _, msg, _ := do(t, bob, "GET", u, nil); code != 200 {
		t.Errorf("another caller: %d %q", code, msg)
	}
}

// Every admitted or refused request leaves one audit record with the
// verified identity.
func TestAuditRecords(t *testing.T) {
	log := audit.New(audit.Config{})
	e := newEnvConfig(t, relay.Config{Tunnel: testTunnel(), Audit: log})
	var hits atomic.Int64
	e.agent("c1", e.identity("c1"), counted(t, &hits), 1)
	e.waitConnected("c1", 1)
	do(t, e.client(), "GET", e.ts.URL+"/clusters/c1/api?x=1", nil)
	do(t, e.ts.Client(), "GET", e.ts.URL+"/clusters/c1/version", map[string]string{"Impersonate-User": "jane"})
	// What an anonymous caller sends is cut short in the record.
	do(t, e.client(), "GET", e.ts.URL+"/clusters/c2/"+strings.Repeat("a", 100_000), map[string]string{"Impersonate-User": strings.Repeat("b", 50_000)})
	if r := log.Query(audit.Filter{Cluster: "c2"}); len(r) != 1 || len(r[0].Path) > 2100 || len(r[0].Impersonate) > 300 {
		t.Errorf("the audit record keeps what the client sent in full: %d records", len(r))
	}
	recs := log.Query(audit.Filter{Cluster: "c1"})
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2: %+v", len(recs), recs)
	}
	if r := recs[0]; r.Status != 401 || r.Principal.ID != "" || r.Path != "/clusters/c1/api?x=1" || r.Client != "127.0.0.1" {
		t.Errorf("refused: %+v", r)
	}
	if r := recs[1]; r.Status != 200 || r.Principal.Kind != api.PrincipalKindAdmin || r.Impersonate != "jane" || r.BytesOut == 0 || r.Method != "GET" {
		t.Errorf("admitted: %+v", r)
	}
}

// A relay configured with a host suffix finds the cluster by TLS server
// name, whatever the path (kubectl --raw, kubectl proxy).
func TestClusterByServerName(t *testing.T) {
	e := newEnvConfig(t, relay.Config{Tunnel: testTunnel(), HostSuffix: "example.com"})
	var hits atomic.Int64
	e.agent("c1", e.identity("c1"), counted(t, &hits), 1)
	e.waitConnected("c1", 1)
	c := e.ts.Client()
	tr := c.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = "c1.example.com"
	defer tr.CloseIdleConnections()
	code, _, body, _ := do(t, &http.Client{Transport: tr}, "GET", e.ts.URL+"/version", nil)
	if code != 200 || !strings.HasPrefix(body, "/version ") {
		t.Errorf("by server name: %d %q", code, body)
	}
	// A connection opened for c1 that carries a request for c2 is refused.
	req, _ := http.NewRequest("GET", e.ts.URL+"/version", nil)
	req.Host = "c2.example.com"
	if resp, err := (&http.Client{Transport: tr}).Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("server name c1, Host c2: %v %v, want 421", resp, err)
	} else {
		resp.Body.Close()
	}
	anon := tr.Clone()
	anon.TLSClientConfig.Certificates = nil
	if code, _, _, _ := do(t, &http.Client{Transport: anon}, "GET", e.ts.URL+"/version", nil); code != 401 {
		t.Errorf("anonymous by server name: %d, want 401", code)
	}
	// The issued kubeconfig carries both the server name and the path:
	// with both, the prefix of the same cluster is removed; a path naming
	// another cluster is misdirected.
	code, b := e.api("GET", "/api/v1/clusters/c1/kubeconfig", "")
	if code != 200 || !strings.Contains(string(b), "tls-server-name: c1.example.com") || !strings.Contains(string(b), "server: "+e.ts.URL+"/clusters/c1") {
		t.Errorf("kubeconfig: %d\n%s", code, b)
	}
	if code, _, body, _ := do(t, &http.Client{Transport: tr}, "GET", e.ts.URL+"/clusters/c1/version", nil); code != 200 || !strings.HasPrefix(body, "/version ") {
		t.Errorf("by server name and path: %d %q", code, body)
	}
	if code, _, _, _ := do(t, &http.Client{Transport: tr}, "GET", e.ts.URL+"/clusters/c2/version", nil); code != http.StatusMisdirectedRequest {
		t.Errorf("server name c1, path of c2: %d, want 421", code)
	}
}

func testTunnel() *tunnel.Config { return &tunnel.Config{DialTimeout: 3 * time.Second} }

// A management or agent API call whose body trickles in gets 408 once the
// body timeout passes, instead of holding its connection.
func TestTrickledBodyTimesOut(t *testing.T) {
	e := newEnvConfig(t, relay.Config{Tunnel: testTunnel(), BodyTimeout: 300 * time.Millisecond})
	for _, path := range []string{api.ClustersPath, api.EnrollPath} {
		conn, err := tlsDialH1(e)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", path, adminToken)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			conn.Close()
			t.Fatalf("%s: %v", path, err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("%s with a trickled body: %d, want 408", path, resp.StatusCode)
		}
	}
}

// Only a replica's peer certificate makes the relay read the forwarded
// principal header: from any other caller it is ignored (its own identity
// decides) and never reaches the cluster.
func TestForgedForwardedPrincipalIgnored(t *testing.T) {
	e := newEnv(t)
	var seen atomic.Value
	seen.Store("")
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get(api.HeaderForwardedPrincipal))
		fmt.Fprint(w, "ok")
	})).URL
	e.agent("c1", e.identity("c1"), up, 1)
	e.waitConnected("c1", 1)
	admin, _ := json.Marshal(api.Principal{Kind: api.PrincipalKindAdmin, ID: "admin"})
	forged := map[string]string{api.HeaderForwardedPrincipal: base64.RawURLEncoding.EncodeToString(admin)}
	alice := e.client(e.principalCert(api.Principal{Kind: api.PrincipalKindUser, ID: "oid-alice"}, time.Hour))
	if code, reason, msg, _ := do(t, alice, "GET", e.ts.URL+"/clusters/c1/version", forged); code != 403 || reason != api.ReasonForbidden {
		t.Errorf("a user without access claiming the admin in %s: %d %s %q, want 403", api.HeaderForwardedPrincipal, code, reason, msg)
	}
	if code, _, msg, _ := do(t, e.ts.Client(), "GET", e.ts.URL+"/clusters/c1/version", forged); code != 200 || msg != "ok" {
		t.Fatalf("the admin with the header: %d %q, want 200", code, msg)
	}
	if h := seen.Load().(string); h != "" {
		t.Errorf("the cluster received %s: %q", api.HeaderForwardedPrincipal, h)
	}
}
