package relay_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/clusteragent/connect"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

// fetch fetches path through the relay and returns the code and body.
func (e *env) fetch(path string) (*http.Response, string) {
	e.t.Helper()
	resp, err := e.ts.Client().Get(e.ts.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// slowUpstream answers "done"; a request for /slow is held until release is
// closed, and arrived is closed once it is in.
func slowUpstream(t *testing.T) (up *httptest.Server, arrived, release chan struct{}) {
	arrived, release = make(chan struct{}), make(chan struct{})
	up = upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		io.WriteString(w, "done")
	}))
	return up, arrived, release
}

// Idle keep-alive connections in the relay's proxy transport are open
// streams; a drain that waited for zero streams would always run into its
// deadline. It must close them and return once nothing is in flight.
func TestShutdownDoesNotWaitForIdleKeepAlives(t *testing.T) {
	e := newEnv(t)
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	e.agent("c1", e.identity("c1"), up.URL, 2)
	e.waitConnected("c1", 2)
	// Concurrent requests leave one pooled proxy connection each.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if resp, body := e.fetch("/clusters/c1/api"); resp.StatusCode != 200 || body != "ok" {
				t.Errorf("request: %d %q", resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	const timeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > timeout/4 {
		t.Fatalf("Shutdown took %s with nothing in flight (timeout %s): it waited for idle keep-alive streams", d, timeout)
	}
}

// A request in flight when the drain starts finishes; new ones are refused
// at once with a reason to retry elsewhere; the drain ends with the request.
func TestShutdownFinishesInFlightRequests(t *testing.T) {
	e := newEnv(t)
	up, arrived, release := slowUpstream(t)
	e.agent("c1", e.identity("c1"), up.URL, 1)
	e.waitConnected("c1", 1)
	slow := make(chan string, 1)
	go func() {
		resp, body := e.fetch("/clusters/c1/slow")
		slow <- resp.Status + " " + body
	}()
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	start := time.Now()
	go func() { drained <- e.srv.Shutdown(ctx) }()
	// New requests are refused while the slow one is in flight.
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := e.ts.Client().Get(e.ts.URL + "/clusters/c1/api")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK && time.Now().Before(deadline) {
			// Answered before Shutdown (started just above) began.
			resp.Body.Close()
			continue
		}
		code, reason, msg := status(t, resp)
		if code == http.StatusServiceUnavailable && reason == api.ReasonClusterBusy && strings.Contains(msg, "shutting down") {
			if resp.Header.Get("Retry-After") == "" {
				t.Error("503 while draining without Retry-After")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new request during drain: %d %s %q", code, reason, msg)
		}
	}
	select {
	case err := <-drained:
		t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
	default:
	}
	close(release)
	if got := <-slow; got != "200 OK done" {
		t.Errorf("in-flight request: %q", got)
	}
	if err := <-drained; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Shutdown took %s after the last request finished", d)
	}
}

// When every tunnel refuses a new stream (here: the relay's stream limit),
// kubectl is told the cluster is busy and when to retry, not that it is not
// connected.
func TestAllTunnelsBusyIs503ClusterBusy(t *testing.T) {
	e := newEnvTunnel(t, 0, &tunnel.Config{DialTimeout: 3 * time.Second, MaxStreams: 1})
	up, arrived, release := slowUpstream(t)
	e.agent("c1", e.identity("c1"), up.URL, 1)
	e.waitConnected("c1", 1)
	slow := make(chan int, 1)
	go func() {
		resp, _ := e.fetch("/clusters/c1/slow")
		slow <- resp.StatusCode
	}()
	<-arrived
	resp, err := e.ts.Client().Get(e.ts.URL + "/clusters/c1/api")
	if err != nil {
		t.Fatal(err)
	}
	retry := resp.Header.Get("Retry-After")
	code, reason, msg := status(t, resp)
	if code != http.StatusServiceUnavailable || reason != api.ReasonClusterBusy || !strings.Contains(msg, "busy") || strings.Contains(msg, "not connected") {
		t.Errorf("every tunnel full: %d %s %q", code, reason, msg)
	}
	if retry == "" {
		t.Error("busy answer without Retry-After")
	}
	close(release)
	if c := <-slow; c != 200 {
		t.Errorf("the request holding the stream: %d", c)
	}
}

// An agent's drain (SIGTERM, or a refresh after rotation) tells the relay,
// which closes its idle proxy connections on that tunnel, so the agent does
// not wait for streams nobody uses.
func TestAgentDrainDoesNotWaitForIdleKeepAlives(t *testing.T) {
	e := newEnv(t)
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	a, err := connect.New(connect.Config{
		RelayURL: e.ts.URL, Cluster: "c1", TLSConfig: e.identity("c1"), Tunnels: 1,
		Targets:      map[string]connect.Upstream{"kube": {URL: up.URL, InsecureSkipVerify: true}},
		DrainTimeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	e.waitConnected("c1", 1)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if resp, body := e.fetch("/clusters/c1/api"); resp.StatusCode != 200 || body != "ok" {
				t.Errorf("request: %d %q", resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	start := time.Now()
	cancel()
	<-done
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the agent's drain took %s with only idle keep-alive streams (drain timeout 20s)", d)
	}
}
