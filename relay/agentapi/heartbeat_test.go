package agentapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/relay/agentapi"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/connectivity"
	"github.com/clusterconnect/clusterconnect/relay/dataplane"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// countingStore counts the cluster writes.
type countingStore struct {
	store.Store
	updates atomic.Int64
}

func (s *countingStore) UpdateCluster(ctx context.Context, name string, update func(*store.Cluster) error) (*store.Cluster, error) {
	s.updates.Add(1)
	return s.Store.UpdateCluster(ctx, name, update)
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// heartbeatEnv is an agent API on an embedded store with one enrolled
// cluster, "c", and its agent's certificate.
type heartbeatEnv struct {
	t     *testing.T
	st    *countingStore
	clock *fakeClock
	mux   *http.ServeMux
	cert  *x509.Certificate
}

func newHeartbeatEnv(t *testing.T, writeInterval time.Duration) *heartbeatEnv {
	t.Helper()
	bolt, err := store.OpenBolt(filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	st := &countingStore{Store: bolt}
	clock := &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	caCert, caKey, err := clusterca.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := clusterca.Load(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := bolt.CreateCluster(ctx, &store.Cluster{Name: "c", UID: "u1", CertGeneration: 1}); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, cert, err := ca.Issue(&x509.CertificateRequest{PublicKey: &key.PublicKey}, clusterca.Identity{Cluster: "c", UID: "u1", Generation: 1}, clock.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	plane, err := dataplane.New(dataplane.Config{Registered: func(context.Context, string) (bool, error) { return true, nil }})
	if err != nil {
		t.Fatal(err)
	}
	h, err := agentapi.New(agentapi.Config{
		Store: st, ClusterCA: ca, Plane: plane, Now: clock.Now, HeartbeatWriteInterval: writeInterval,
		Status: &connectivity.Tracker{OfflineAfter: 15 * time.Minute, Now: clock.Now},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &heartbeatEnv{t: t, st: st, clock: clock, mux: http.NewServeMux(), cert: cert}
	h.Register(e.mux)
	return e
}

// beat sends a heartbeat with the agent's certificate and returns the
// status code and the connectivity status answered.
func (e *heartbeatEnv) beat(body string) (int, string) {
	e.t.Helper()
	r := httptest.NewRequest(http.MethodPost, api.HeartbeatPath, strings.NewReader(body))
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{e.cert}}
	w := httptest.NewRecorder()
	e.mux.ServeHTTP(w, r)
	var resp api.HeartbeatResponse
	if w.Code == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			e.t.Fatal(err)
		}
	}
	return w.Code, resp.ConnectivityStatus
}

func (e *heartbeatEnv) stored() *store.Cluster {
	e.t.Helper()
	c, err := e.st.GetCluster(context.Background(), "c")
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// writes is how many times the handler wrote the cluster so far.
func (e *heartbeatEnv) writes() int64 { return e.st.updates.Load() }

func metadataBody(nodes int) string {
	return `{"metadata":{"kubernetesVersion":"v1.37.2","agentVersion":"v0.1.0","totalNodeCount":` + strconv.Itoa(nodes) +
		`,"totalCoreCount":12,"agents":[{"role":"connect","replicas":2,"readyReplicas":2,"ready":true}]}}`
}

// Heartbeats that change nothing but the time are written at most once per
// HeartbeatWriteInterval; a metadata change, or the interval passing, is
// written at once.
func TestHeartbeatWritesBounded(t *testing.T) {
	const interval = 30 * time.Second
	e := newHeartbeatEnv(t, interval)
	if code, st := e.beat(metadataBody(1)); code != 200 || st != api.StatusConnected {
		t.Fatalf("first heartbeat: %d %s", code, st)
	}
	if n := e.writes(); n != 1 {
		t.Fatalf("first heartbeat: %d writes, want 1", n)
	}
	first := e.stored()
	if first.Metadata.TotalNodeCount != 1 || !first.LastHeartbeat.Equal(e.clock.Now()) {
		t.Fatalf("first heartbeat not stored: %+v", first)
	}

	// Rapid heartbeats, with the same metadata or none: no write, and the
	// answer is the stored status.
	for i := range 100 {
		e.clock.Add(100 * time.Millisecond)
		body := metadataBody(1)
		if i%2 == 1 {
			body = `{}`
		}
		if code, st := e.beat(body); code != 200 || st != api.StatusConnected {
			t.Fatalf("heartbeat %d: %d %s", i, code, st)
		}
	}
	if n := e.writes(); n != 1 {
		t.Fatalf("100 rapid heartbeats with unchanged metadata: %d writes in all, want the first only", n)
	}
	if c := e.stored(); c.Version != first.Version || !c.LastHeartbeat.Equal(first.LastHeartbeat) {
		t.Fatalf("the record changed: version %d → %d", first.Version, c.Version)
	}

	// Changed metadata is written at once, well within the interval.
	e.clock.Add(100 * time.Millisecond)
	if code, _ := e.beat(metadataBody(2)); code != 200 {
		t.Fatalf("heartbeat with new metadata: %d", code)
	}
	changed := e.stored()
	if n := e.writes(); n != 2 || changed.Metadata.TotalNodeCount != 2 || !changed.LastHeartbeat.Equal(e.clock.Now()) {
		t.Fatalf("after a metadata change: %d writes, stored %+v", n, changed.Metadata)
	}
	e.clock.Add(interval - time.Millisecond)
	e.beat(metadataBody(2))
	e.beat(`{}`)
	if n := e.writes(); n != 2 {
		t.Fatalf("heartbeats just within the interval: %d writes, want 2", n)
	}

	// Once the stored heartbeat is the interval old, the next is written.
	e.clock.Add(time.Millisecond)
	e.beat(`{}`)
	if c := e.stored(); e.writes() != 3 || !c.LastHeartbeat.Equal(e.clock.Now()) || c.Metadata.TotalNodeCount != 2 {
		t.Fatalf("heartbeat after the interval: %d writes, stored heartbeat %s, want 3 and %s", e.writes(), c.LastHeartbeat, e.clock.Now())
	}
}

// The heartbeats answered without a write still check the agent's
// certificate against the cluster, and a status the stored record has
// wrong is written at once.
func TestHeartbeatWithoutWriteAuthenticates(t *testing.T) {
	e := newHeartbeatEnv(t, 30*time.Second)
	ctx := context.Background()
	if code, _ := e.beat(`{}`); code != 200 {
		t.Fatalf("first heartbeat: %d", code)
	}
	// Another replica (its clock behind) recorded Offline: this heartbeat
	// records the way back.
	if _, err := e.st.Store.UpdateCluster(ctx, "c", func(c *store.Cluster) error { c.Status = api.StatusOffline; return nil }); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Second)
	before := e.writes()
	if code, st := e.beat(`{}`); code != 200 || st != api.StatusConnected || e.writes() != before+1 || e.stored().Status != api.StatusConnected {
		t.Fatalf("heartbeat over a stale status: %d %s, %d writes", code, st, e.writes()-before)
	}
	// A new registration revokes the certificate: refused at once.
	if _, err := e.st.Store.UpdateCluster(ctx, "c", func(c *store.Cluster) error { c.CertGeneration++; return nil }); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Second)
	before = e.writes()
	if code, _ := e.beat(`{}`); code != http.StatusUnauthorized || e.writes() != before {
		t.Fatalf("heartbeat with a revoked certificate: %d, %d writes", code, e.writes()-before)
	}
	if err := e.st.Store.DeleteCluster(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.beat(`{}`); code != http.StatusUnauthorized {
		t.Fatalf("heartbeat of a deleted cluster: %d", code)
	}
}

func TestHeartbeatWriteIntervalBelowOfflineAfter(t *testing.T) {
	caCert, caKey, _ := clusterca.Generate()
	ca, _ := clusterca.Load(caCert, caKey)
	plane, _ := dataplane.New(dataplane.Config{Registered: func(context.Context, string) (bool, error) { return true, nil }})
	cfg := agentapi.Config{Store: &countingStore{}, ClusterCA: ca, Plane: plane, Status: &connectivity.Tracker{OfflineAfter: time.Minute}}
	for _, d := range []time.Duration{-time.Second, time.Minute, time.Hour} {
		cfg.HeartbeatWriteInterval = d
		if _, err := agentapi.New(cfg); err == nil {
			t.Errorf("HeartbeatWriteInterval %s with OfflineAfter 1m accepted", d)
		}
	}
	cfg.HeartbeatWriteInterval = 0 // the default, or half of a short OfflineAfter
	cfg.Status.OfflineAfter = time.Second
	if _, err := agentapi.New(cfg); err != nil {
		t.Errorf("default with OfflineAfter 1s: %v", err)
	}
}
