package serve

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// selfSigned returns a serving certificate for 127.0.0.1 and a client that
// trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *http.Client) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "serve test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type running struct {
	addr, health string
	cancel       context.CancelFunc
	done         chan error
}

// start runs c with a server for h until the test stops it.
func start(t *testing.T, c Config, h http.Handler) (*running, *http.Client) {
	t.Helper()
	cert, client := selfSigned(t)
	if c.Server == nil {
		c.Server = &http.Server{}
	}
	c.Server.Handler, c.Server.TLSConfig = h, &tls.Config{Certificates: []tls.Certificate{cert}}
	c.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	up := make(chan struct{})
	go func() {
		r.done <- Run(ctx, c, func(addr, health string) { r.addr, r.health = addr, health; close(up) })
	}()
	select {
	case <-up:
	case err := <-r.done:
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r, client
}

// stop ends the context and returns Run's error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the context ended")
		return nil
	}
}

var hello = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") })

// A nil Logger discards, as the nil config convention says; it used to
// panic once the context ended.
func TestNilLogger(t *testing.T) {
	r, client := start(t, Config{}, hello)
	resp, err := client.Get("https://" + r.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// Without a Registry the health server shows the Go and process metrics.
func TestHealthDefaults(t *testing.T) {
	r, client := start(t, Config{HealthListen: "127.0.0.1:0"}, hello)
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ok", "/metrics": "go_goroutines"} {
		resp, err := client.Get("http://" + r.health + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("%s: HTTP %d %.100q, want %q", path, resp.StatusCode, b, want)
		}
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// A component's own Health handler serves the health listener, and
// /metrics stays off the main listener.
func TestHealthHandler(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	})
	r, client := start(t, Config{HealthListen: "127.0.0.1:0", Health: mux}, http.NotFoundHandler())
	for url, want := range map[string]int{
		"http://" + r.health + "/readyz":  http.StatusServiceUnavailable,
		"http://" + r.health + "/healthz": http.StatusNotFound, // the component's handler, not the built-in
		"https://" + r.addr + "/metrics":  http.StatusNotFound,
		"http://" + r.health + "/metrics": http.StatusNotFound,
	} {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: HTTP %d, want %d", url, resp.StatusCode, want)
		}
	}
}

// OnShutdown runs while the servers drain: an in-flight request still
// completes after it was called, and its error is Run's.
func TestOnShutdown(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done")
	})
	errDrain := errors.New("tunnels drained with errors")
	called := make(chan struct{})
	cfg := Config{ShutdownTimeout: 10 * time.Second, OnShutdown: func(ctx context.Context) error {
		close(called)
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > 10*time.Second {
			t.Errorf("hook context deadline %v, %v: want within the shutdown timeout", dl, ok)
		}
		close(release)
		return errDrain
	}}
	r, client := start(t, cfg, slow)
	got := make(chan string, 1)
	go func() {
		resp, err := client.Get("https://" + r.addr + "/")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-entered
	select {
	case <-called:
		t.Fatal("OnShutdown called before the context ended")
	default:
	}
	err := r.stop(t)
	if !errors.Is(err, errDrain) {
		t.Errorf("Run = %v, want the hook's error", err)
	}
	if s := <-got; s != "done" {
		t.Errorf("in-flight request during the drain: %s", s)
	}
}

// A hook that waits for its context makes Run return after ShutdownTimeout,
// not later.
func TestOnShutdownBounded(t *testing.T) {
	cfg := Config{ShutdownTimeout: 50 * time.Millisecond, OnShutdown: func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}}
	r, _ := start(t, cfg, hello)
	begin := time.Now()
	err := r.stop(t)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run = %v, want the hook's deadline error", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("Run took %s after the context ended", took)
	}
}
