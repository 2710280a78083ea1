package heartbeat

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// The relay is down for a while: heartbeats back off and log once, resume
// with one line, and metadata goes only when it changed.
func TestOutageAndMetadataChanges(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	var refused atomic.Int64
	var mu sync.Mutex
	var withMD, total int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/agent/v1/heartbeat" {
			http.NotFound(w, r)
			return
		}
		if down.Load() {
			refused.Add(1)
			w.WriteHeader(503)
			w.Write([]byte(`{"kind":"Status","message":"relay is shutting down"}`))
			return
		}
		var req api.HeartbeatRequest
		json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		total++
		if req.Metadata != nil {
			withMD++
		}
		mu.Unlock()
		w.Write([]byte(`{"connectivityStatus":"Connected"}`))
	}))
	defer srv.Close()
	var nodes atomic.Int64
	nodes.Store(1)
	var logs syncBuf
	s := New(Config{
		RelayURL: srv.URL,
		Client:   srv.Client(),
		Collect: func(context.Context) (api.Metadata, error) {
			return api.Metadata{KubernetesVersion: "v1.37.2", TotalNodeCount: int(nodes.Load())}, nil
		},
		Interval: 50 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	wait := func(cond func() bool, what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s; logs:\n%s", what, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	wait(func() bool { return strings.Contains(logs.String(), "heartbeat failed") }, "no failure logged")
	wait(func() bool { return refused.Load() >= 4 }, "fewer than 4 attempts while the relay was down")
	down.Store(false)
	wait(func() bool { return strings.Contains(logs.String(), "heartbeats resumed") }, "no resume logged")
	if n := strings.Count(logs.String(), "heartbeat failed"); n != 1 {
		t.Errorf("the outage was logged %d times, want once", n)
	}
	count := func() (int, int) { mu.Lock(); defer mu.Unlock(); return total, withMD }
	wait(func() bool { n, _ := count(); return n >= 4 }, "heartbeats did not continue")
	if _, md := count(); md != 1 {
		t.Errorf("metadata sent %d times while unchanged, want once", md)
	}
	nodes.Store(2)
	wait(func() bool { _, md := count(); return md == 2 }, "changed metadata not sent")
}
