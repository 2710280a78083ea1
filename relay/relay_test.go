package relay_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/clusteragent/connect"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const adminToken = "admin-secret"

type env struct {
	t     *testing.T
	srv   *relay.Server
	ts    *httptest.Server
	caPEM []byte
	dir   string
	ca    *clusterca.CA
	st    store.Store
	now   atomic.Pointer[time.Time] // the relay's clock; nil means real time
}

func (e *env) clock() time.Time {
	if t := e.now.Load(); t != nil {
		return *t
	}
	return time.Now()
}

// advance moves the relay's clock forward.
func (e *env) advance(d time.Duration) {
	t := e.clock().Add(d)
	e.now.Store(&t)
}

func newEnv(t *testing.T) *env { return newEnvWith(t, 0) }

// newEnvWith sets the relay's OfflineAfter (zero: the default).
func newEnvWith(t *testing.T, offlineAfter time.Duration) *env {
	t.Helper()
	return newEnvTunnel(t, offlineAfter, &tunnel.Config{DialTimeout: 3 * time.Second})
}

// newEnvTunnel also sets the relay's side of the tunnels.
func newEnvTunnel(t *testing.T, offlineAfter time.Duration, tc *tunnel.Config) *env {
	t.Helper()
	return newEnvConfig(t, relay.Config{OfflineAfter: offlineAfter, Tunnel: tc})
}

// newEnvConfig starts a relay with cfg plus the test's store, URL, CA,
// admin token, clock and logger. ts.Client() presents the admin's relay
// client certificate, as connectctl kube-credential would: the data path
// admits it (the admin is an Owner).
func newEnvConfig(t *testing.T, cfg relay.Config) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir}
	ts := httptest.NewUnstartedServer(nil)
	ts.EnableHTTP2 = true
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	ts.StartTLS()
	caCert, caKey, err := clusterca.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := clusterca.Load(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	e.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	cfg.Store, cfg.ExternalURL, cfg.CAPEM, cfg.AdminToken, cfg.ClusterCA, cfg.Now = st, ts.URL, e.caPEM, adminToken, ca, e.clock
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = srv
	e.srv, e.ts, e.ca, e.st = srv, ts, ca, st
	ts.Client().Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{
		e.principalCert(api.Principal{Kind: api.PrincipalKindAdmin, ID: "admin", Name: "admin"}, 365*24*time.Hour)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		ts.Close()
		st.Close()
	})
	return e
}

// principalCert is a relay client certificate for p, as the management
// API's client certificate call issues.
func (e *env) principalCert(p api.Principal, lifetime time.Duration) tls.Certificate {
	e.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr, _ := x509.ParseCertificateRequest(der)
	certPEM, _, err := e.ca.IssuePrincipal(csr, p, e.clock(), lifetime)
	if err != nil {
		e.t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	if err != nil {
		e.t.Fatal(err)
	}
	return pair
}

// client is an HTTP client of the relay presenting certs (none: anonymous).
func (e *env) client(certs ...tls.Certificate) *http.Client {
	e.t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(e.caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}, ForceAttemptHTTP2: true}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (e *env) api(method, path, body string) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.ts.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// register creates a cluster and returns its registration token.
func (e *env) register(name string) string {
	e.t.Helper()
	code, b := e.api("POST", "/api/v1/clusters", fmt.Sprintf(`{"name":%q}`, name))
	if code != 201 {
		e.t.Fatalf("create %s: %d %s", name, code, b)
	}
	var v api.ConnectedCluster
	json.Unmarshal(b, &v)
	if v.RegistrationToken == "" || v.Properties.ConnectivityStatus != "Connecting" {
		e.t.Fatalf("create answer: %s", b)
	}
	return v.RegistrationToken
}

// enroll does what the agent's identity role does: a key, a CSR, and the
// enrol call. It returns the status code, the Status message on failure,
// and a TLS config presenting the certificate.
func (e *env) enroll(name, token string) (int, string, *tls.Config) {
	e.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	body, _ := json.Marshal(api.EnrollRequest{Cluster: name, Token: token, CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	resp, err := e.ts.Client().Post(e.ts.URL+"/agent/v1/enroll", "application/json", strings.NewReader(string(body)))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		var st struct{ Message string }
		json.Unmarshal(b, &st)
		return resp.StatusCode, st.Message, nil
	}
	var cr api.CertificateResponse
	if err := json.Unmarshal(b, &cr); err != nil {
		e.t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair([]byte(cr.Certificate), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	if err != nil {
		e.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(cr.CABundle))
	return 200, "", &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13}
}

// identity registers and enrols a cluster.
func (e *env) identity(name string) *tls.Config {
	e.t.Helper()
	code, msg, cfg := e.enroll(name, e.register(name))
	if code != 200 {
		e.t.Fatalf("enrol %s: %d %s", name, code, msg)
	}
	return cfg
}

// agent runs an in-process agent whose "kube" target is upstream (a URL).
func (e *env) agent(name string, tlsCfg *tls.Config, upstream string, tunnels int) (*connect.Agent, func()) {
	e.t.Helper()
	a, err := connect.New(connect.Config{
		RelayURL:     e.ts.URL,
		Cluster:      name,
		TLSConfig:    tlsCfg,
		Tunnels:      tunnels,
		Targets:      map[string]connect.Upstream{"kube": {URL: upstream, InsecureSkipVerify: true}},
		Backoff:      tunnel.Backoff{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond},
		DrainTimeout: time.Second,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	stop := func() { cancel(); <-done }
	e.t.Cleanup(stop)
	return a, stop
}

func (e *env) waitConnected(name string, n int) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.srv.Connected(name) != n {
		if time.Now().After(deadline) {
			e.t.Fatalf("cluster %s: %d tunnels, want %d", name, e.srv.Connected(name), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// status decodes a Kubernetes Status answer.
func status(t *testing.T, resp *http.Response) (int, string, string) {
	t.Helper()
	defer resp.Body.Close()
	var st struct {
		Kind, Reason, Message string
		Code                  int
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &st); err != nil || st.Kind != "Status" {
		t.Fatalf("answer %d is not a Status: %s", resp.StatusCode, b)
	}
	if st.Code != resp.StatusCode {
		t.Fatalf("Status code %d differs from HTTP %d", st.Code, resp.StatusCode)
	}
	return st.Code, st.Reason, st.Message
}

// upstream is a TLS HTTP server standing in for the API server in these
// unit tests (the e2e tests use the real one).
func upstream(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	u := httptest.NewUnstartedServer(h)
	u.EnableHTTP2 = false
	u.StartTLS()
	t.Cleanup(u.Close)
	return u
}

func TestProxyStripsPrefixAndPassesHeaders(t *testing.T) {
	e := newEnv(t)
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s auth=%s q=%s", r.Method, r.URL.EscapedPath(), r.Header.Get("Authorization"), r.URL.RawQuery)
	}))
	e.agent("c1", e.identity("c1"), up.URL, 2)
	e.waitConnected("c1", 2)
	req, _ := http.NewRequest("GET", e.ts.URL+"/clusters/c1/api/v1/namespaces/a%2Fb/pods?limit=5", nil)
	req.Header.Set("Authorization", "Bearer user-token")
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "GET /api/v1/namespaces/a%2Fb/pods auth=Bearer user-token q=limit=5"; string(b) != want {
		t.Fatalf("upstream saw %q, want %q", b, want)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("kubectl side spoke %s, want HTTP/2", resp.Proto)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	get := func(path string) *http.Response {
		resp, err := e.ts.Client().Get(e.ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if code, reason, msg := status(t, get("/clusters/nope/api")); code != 404 || reason != "NotFound" || !strings.Contains(msg, `"nope" is not registered`) {
		t.Errorf("unknown cluster: %d %s %q", code, reason, msg)
	}
	if code, _, msg := status(t, get("/clusters/Not_A%20Name/api")); code != 404 || !strings.Contains(msg, "lowercase DNS labels") {
		t.Errorf("invalid cluster name: %d %q", code, msg)
	}
	id := e.identity("c2")
	if code, _, msg := status(t, get("/clusters/c2/api")); code != 503 || !strings.Contains(msg, "cluster c2 is not connected") {
		t.Errorf("no tunnel: %d %q", code, msg)
	}
	// An upstream that refuses connections: the agent reports it, 502.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "https://" + ln.Addr().String()
	ln.Close()
	e.agent("c2", id, dead, 1)
	e.waitConnected("c2", 1)
	if code, _, msg := status(t, get("/clusters/c2/api")); code != 502 || !strings.Contains(msg, "could not reach the Kubernetes API server") {
		t.Errorf("dead upstream: %d %q", code, msg)
	}
}

func TestAgentKilledGives503(t *testing.T) {
	e := newEnv(t)
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	_, stop := e.agent("c3", e.identity("c3"), up.URL, 2)
	e.waitConnected("c3", 2)
	stop()
	e.waitConnected("c3", 0)
	resp, err := e.ts.Client().Get(e.ts.URL + "/clusters/c3/version")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := status(t, resp); code != 503 {
		t.Fatalf("after the agent stopped: %d, want 503", code)
	}
}

func TestStreamingIsFlushed(t *testing.T) {
	e := newEnv(t)
	next := make(chan string)
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		w.(http.Flusher).Flush() // the API server sends a watch's headers at once
		for line := range next {
			io.WriteString(w, line+"\n")
			w.(http.Flusher).Flush()
		}
	}))
	e.agent("c5", e.identity("c5"), up.URL, 1)
	e.waitConnected("c5", 1)
	resp, err := e.ts.Client().Get(e.ts.URL + "/clusters/c5/api/v1/pods?watch=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for i := range 3 {
		want := fmt.Sprintf(`{"type":"ADDED","n":%d}`, i)
		next <- want
		// Each event arrives while the upstream still holds the response
		// open: nothing waits for the end of the body.
		got, err := r.ReadString('\n')
		if err != nil || strings.TrimSpace(got) != want {
			t.Fatalf("event %d: %q, %v", i, got, err)
		}
	}
	close(next)
}

func TestUpgradeIsBytePipe(t *testing.T) {
	e := newEnv(t)
	// An upstream that switches protocols and then echoes, as the API server
	// does for exec (SPDY or WebSocket) after the 101.
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "SPDY/3.1" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
	}))
	e.agent("c6", e.identity("c6"), up.URL, 1)
	e.waitConnected("c6", 1)
	// kubectl upgrades over HTTP/1.1.
	conn, err := tlsDialH1(e)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /clusters/c6/api/v1/namespaces/d/pods/p/exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	payload := strings.Repeat("0123456789", 10000)
	go io.WriteString(conn, payload)
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != payload {
		t.Fatalf("echo after upgrade: %d bytes, %v", len(got), err)
	}
}

func TestManagementAPI(t *testing.T) {
	e := newEnv(t)
	req, _ := http.NewRequest("GET", e.ts.URL+"/api/v1/clusters", nil)
	resp, _ := e.ts.Client().Do(req)
	if code, _, _ := status(t, resp); code != 401 {
		t.Fatalf("no admin token: %d", code)
	}
	for _, body := range []string{`{"name":"Bad_Name"}`, `{"name":""}`, `not json`, `{"name":"x","extra":1}`} {
		if code, b := e.api("POST", "/api/v1/clusters", body); code != 400 {
			t.Errorf("create %s: %d %s", body, code, b)
		}
	}
	id := e.identity("c7")
	if code, _ := e.api("POST", "/api/v1/clusters", `{"name":"c7"}`); code != 409 {
		t.Errorf("duplicate create: %d", code)
	}
	code, b := e.api("GET", "/api/v1/clusters/c7/kubeconfig", "")
	if code != 200 {
		t.Fatalf("kubeconfig: %d %s", code, b)
	}
	kc, err := clientcmd.Load(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := kc.Clusters["c7"].Server; got != e.ts.URL+"/clusters/c7" {
		t.Errorf("kubeconfig server = %q", got)
	}
	if string(kc.Clusters["c7"].CertificateAuthorityData) != string(e.caPEM) {
		t.Error("kubeconfig lacks the relay CA")
	}
	// Deleting a connected cluster closes its tunnels at once.
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	e.agent("c7", id, up.URL, 2)
	e.waitConnected("c7", 2)
	if code, b := e.api("DELETE", "/api/v1/clusters/c7", ""); code != 204 {
		t.Fatalf("delete: %d %s", code, b)
	}
	e.waitConnected("c7", 0)
	if code, _ := e.api("GET", "/api/v1/clusters/c7", ""); code != 404 {
		t.Errorf("get after delete: %d", code)
	}
}

// An upstream that never answers (a listener nobody accepts from: the TLS
// handshake hangs, as with dropped packets) is the agent's dial_failed, 502,
// not the relay's timeout: the agent's dial ends before the relay's wait.
func TestSilentUpstreamIs502(t *testing.T) {
	e := newEnvTunnel(t, 0, &tunnel.Config{DialTimeout: 2 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := connect.New(connect.Config{
		RelayURL: e.ts.URL, Cluster: "c1", TLSConfig: e.identity("c1"), Tunnels: 1,
		Targets: map[string]connect.Upstream{"kube": {URL: "https://" + ln.Addr().String(), InsecureSkipVerify: true}},
		Tunnel:  &tunnel.Config{DialTimeout: 2 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	e.waitConnected("c1", 1)
	resp, err := e.ts.Client().Get(e.ts.URL + "/clusters/c1/api")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, msg := status(t, resp); code != http.StatusBadGateway || !strings.Contains(msg, "could not reach the Kubernetes API server") {
		t.Errorf("silent upstream: %d %q, want 502 from the agent's dial_failed", code, msg)
	}
}
