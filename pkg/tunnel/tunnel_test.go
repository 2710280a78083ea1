package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer is a TCP upstream that echoes what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

type harness struct {
	pool   *Pool
	client *Client
	srv    *httptest.Server
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs a relay-side endpoint (TLS) and an agent Client with n tunnels
// whose allow-list has "echo" → the echo server and "dead" → a closed port.
func start(t *testing.T, n int, header http.Header) *harness {
	return startWith(t, n, header, nil)
}

// sourceServer is an upstream that writes until its connection breaks and
// ignores the end of its input, then reports on closed.
func sourceServer(t *testing.T, closed chan<- struct{}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					if _, err := c.Write(buf); err != nil {
						break
					}
				}
				if closed != nil {
					closed <- struct{}{}
				}
			})
		}
	})
	return ln.Addr().String()
}

func startWith(t *testing.T, n int, header http.Header, sourceClosed chan<- struct{}) *harness {
	t.Helper()
	h := &harness{pool: &Pool{}, done: make(chan struct{})}
	var handlers sync.WaitGroup
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			http.Error(w, `{"kind":"Status","message":"bad secret"}`, http.StatusUnauthorized)
			return
		}
		s, err := Accept(w, r, &Config{CloseTimeout: 300 * time.Millisecond})
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		handlers.Add(1)
		defer handlers.Done()
		h.pool.Add(s)
		<-s.Done()
	}))
	h.srv.EnableHTTP2 = false
	h.srv.StartTLS()

	echo := echoServer(t)
	sourceAddr := sourceServer(t, sourceClosed)
	dead := func() string {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		a := ln.Addr().String()
		ln.Close()
		return a
	}()
	dialer := func(addr string) DialFunc {
		return func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	tlsCfg := h.srv.Client().Transport.(*http.Transport).TLSClientConfig
	c, err := NewClient(ClientOptions{
		URL:          "wss" + strings.TrimPrefix(h.srv.URL, "https") + "/tunnel",
		Tunnels:      n,
		Targets:      Targets{"echo": dialer(echo), "dead": dialer(dead), "source": dialer(sourceAddr)},
		Dial:         DialOptions{TLSConfig: tlsCfg, Header: header},
		Backoff:      Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		DrainTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.client = c
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { defer close(h.done); c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-h.done
		h.pool.Close()
		handlers.Wait()
		h.srv.Close()
	})
	return h
}

func (h *harness) waitTunnels(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.pool.Len() != n || h.client.Connected() != n {
		if time.Now().After(deadline) {
			t.Fatalf("want %d tunnels; relay has %d, agent %d", n, h.pool.Len(), h.client.Connected())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEchoRoundTrip(t *testing.T) {
	h := start(t, 2, http.Header{"Authorization": {"Bearer good"}})
	h.waitTunnels(t, 2)
	ctx := context.Background()
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := h.pool.Open(ctx, "echo")
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			go c.Write(payload)
			got := make([]byte, len(payload))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(got, payload) {
				t.Errorf("echo returned %d bytes, want the %d sent", len(got), len(payload))
			}
		}()
	}
	wg.Wait()
	// Streams were spread over both tunnels.
	for _, s := range h.pool.Sessions() {
		if s.ActiveStreams() != 0 {
			t.Errorf("session still counts %d active streams", s.ActiveStreams())
		}
	}
}

func TestRefusals(t *testing.T) {
	h := start(t, 1, http.Header{"Authorization": {"Bearer good"}})
	h.waitTunnels(t, 1)
	ctx := context.Background()
	for _, tc := range []struct {
		target string
		code   Code
	}{
		{"10.0.0.1:22", CodeTargetNotAllowed},
		{"kube", CodeTargetNotAllowed},
		{"dead", CodeDialFailed},
	} {
		_, err := h.pool.Open(ctx, tc.target)
		var se *StreamError
		if !errors.As(err, &se) || se.Code != tc.code {
			t.Errorf("Open(%q) = %v, want a StreamError with code %s", tc.target, err, tc.code)
		}
	}
	// The session survives refusals.
	c, err := h.pool.Open(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestUnsupportedVersionAndMalformed(t *testing.T) {
	h := start(t, 1, http.Header{"Authorization": {"Bearer good"}})
	h.waitTunnels(t, 1)
	s := h.pool.Sessions()[0]
	for _, tc := range []struct {
		name string
		hdr  []byte
		code Code
	}{
		{"v2", []byte{2, 0, 0, 4, 'e', 'c', 'h', 'o'}, CodeUnsupportedVersion},
		{"zero length", []byte{1, 0, 0, 0}, CodeMalformedHeader},
		{"control bytes", []byte{1, 0, 0, 2, '\n', 'x'}, CodeMalformedHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := s.mux.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			st.Write(tc.hdr)
			st.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, code, msg, err := readReply(st)
			if err != nil || code != tc.code {
				t.Fatalf("reply = %v %q %v, want %s", code, msg, err, tc.code)
			}
		})
	}
}

func TestBadCredentialsIsRefusedError(t *testing.T) {
	h := start(t, 1, http.Header{"Authorization": {"Bearer good"}})
	tlsCfg := h.srv.Client().Transport.(*http.Transport).TLSClientConfig
	_, err := Dial(context.Background(), h.srv.URL+"/tunnel", &DialOptions{TLSConfig: tlsCfg, Header: http.Header{"Authorization": {"Bearer bad"}}})
	var re *RefusedError
	if !errors.As(err, &re) || re.StatusCode != 401 || re.Message != "bad secret" {
		t.Fatalf("Dial with a bad secret = %v, want RefusedError 401 with the relay's message", err)
	}
}

func TestOneTunnelDropsOthersServe(t *testing.T) {
	h := start(t, 2, http.Header{"Authorization": {"Bearer good"}})
	h.waitTunnels(t, 2)
	// Kill one tunnel from the relay side; every new stream must still work
	// while the agent reconnects it.
	h.pool.Sessions()[0].Close()
	for range 50 {
		c, err := h.pool.Open(context.Background(), "echo")
		if err != nil {
			t.Fatalf("open while one tunnel is down: %v", err)
		}
		c.Close()
	}
	h.waitTunnels(t, 2)
}

func TestNoTunnel(t *testing.T) {
	var p Pool
	if _, err := p.Open(context.Background(), "echo"); !errors.Is(err, ErrNoTunnel) {
		t.Fatalf("Open on an empty pool = %v, want ErrNoTunnel", err)
	}
}

func TestDrainLetsStreamsFinish(t *testing.T) {
	h := start(t, 1, http.Header{"Authorization": {"Bearer good"}})
	h.waitTunnels(t, 1)
	ctx := context.Background()
	c, err := h.pool.Open(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := h.pool.Sessions()[0]
	// Stop the agent: it sends a go-away and drains.
	h.cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c2, err := h.pool.Open(ctx, "echo")
		if errors.Is(err, ErrNoTunnel) {
			break
		}
		if err == nil {
			c2.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("new streams still open 5 s after the agent began draining (last: %v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The stream in flight still works...
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write during drain: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read during drain = %q, %v", buf, err)
	}
	// ...and once it closes the session ends, well before the drain timeout.
	c.Close()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session still up 5 s after its last stream closed")
	}
}

func TestBackoffFullJitter(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for attempt := range 40 {
		ceil := min(time.Second, 100*time.Millisecond<<min(attempt, 20))
		for range 100 {
			if d := b.Delay(attempt); d <= 0 || d > ceil {
				t.Fatalf("Delay(%d) = %v, want in (0, %v]", attempt, d, ceil)
			}
		}
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add(appendRequest(nil, "kube"))
	f.Add([]byte{1, 0, 0xff, 0xff})
	f.Add([]byte{2, 0, 0, 1, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, target, err := readRequest(bytes.NewReader(b))
		if err == nil && v == Version {
			if !validTarget(target) {
				t.Fatalf("accepted invalid target %q", target)
			}
			if got := appendRequest(nil, target); !bytes.Equal(got, b[:len(got)]) {
				t.Fatalf("round trip: %x vs %x", got, b)
			}
		}
	})
}

func FuzzReadReply(f *testing.F) {
	f.Add(appendReply(nil, CodeDialFailed, "no route"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, msg, err := readReply(bytes.NewReader(b))
		if err == nil && len(msg) > MaxMessageLen {
			t.Fatalf("message of %d bytes accepted", len(msg))
		}
	})
}

// A stream the relay closed while its upstream keeps sending is reset after
// CloseTimeout, and the agent lets go of the upstream connection.
func TestCloseTimeoutResetsStream(t *testing.T) {
	closed := make(chan struct{}, 1)
	h := startWith(t, 1, http.Header{"Authorization": {"Bearer good"}}, closed)
	h.waitTunnels(t, 1)
	c, err := h.pool.Open(context.Background(), "source")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("upstream connection still open 10 s after the relay closed the stream (close timeout 300 ms)")
	}
	s := h.client.Sessions()[0]
	deadline := time.Now().Add(5 * time.Second)
	for s.ActiveStreams() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("agent still counts %d streams", s.ActiveStreams())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Refresh swaps every tunnel for a new connection while a stream in flight
// on the old one keeps working to its end.
func TestRefreshKeepsStreamsInFlight(t *testing.T) {
	h := start(t, 2, http.Header{"Authorization": {"Bearer good"}})
	h.waitTunnels(t, 2)
	ctx := context.Background()
	c, err := h.pool.Open(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := map[*Session]bool{}
	for _, s := range h.client.Sessions() {
		before[s] = true
	}
	h.client.Refresh()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fresh := 0
		for _, s := range h.client.Sessions() {
			if !before[s] {
				fresh++
			}
		}
		if fresh == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Refresh %d of 2 tunnels are new", fresh)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The stream opened before the refresh still echoes.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	for i := range 3 {
		msg := []byte(fmt.Sprintf("after refresh %d", i))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo on the old tunnel = %q, %v", got, err)
		}
	}
	// New streams work too (on the new tunnels).
	c2, err := h.pool.Open(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	c.Close()
	h.waitTunnels(t, 2) // the old ones went away once drained
}
