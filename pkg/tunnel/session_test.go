package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// The session tests run one body over each transport, the way yamux's
// testConnTypes does: an in-memory pipe, TCP loopback, and the production
// path (Accept and Dial over a TLS WebSocket).
var transports = []struct {
	name    string
	connect func(t *testing.T, cfg *Config) (relay, agent *Session)
}{
	{"pipe", func(t *testing.T, cfg *Config) (*Session, *Session) {
		rc, ac := net.Pipe()
		return overConns(t, rc, ac, cfg)
	}},
	{"tcp", tcpSessions},
	{"tls-websocket", wsSessions},
}

func overConns(t *testing.T, rc, ac net.Conn, cfg *Config) (relay, agent *Session) {
	t.Helper()
	relay, err := newSessionOver(rc, cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	agent, err = newSessionOver(ac, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close(); agent.Close() })
	return relay, agent
}

func tcpSessions(t *testing.T, cfg *Config) (relay, agent *Session) {
	return tcpSessionsWith(t, cfg, cfg)
}

func wsSessions(t *testing.T, cfg *Config) (relay, agent *Session) {
	t.Helper()
	accepted := make(chan *Session, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := Accept(w, r, cfg)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		accepted <- s
		<-s.Done()
	}))
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tlsCfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
	agent, err := Dial(context.Background(), "wss"+strings.TrimPrefix(srv.URL, "https"), &DialOptions{TLSConfig: tlsCfg, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	relay = <-accepted
	t.Cleanup(func() { relay.Close(); agent.Close() })
	return relay, agent
}

// upstreams are the agent's targets in memory: each dial returns one end
// of a net.Pipe whose other end runs the upstream.
type upstreams struct {
	wg         sync.WaitGroup
	sinkClosed chan int // bytes a "sink" upstream read before its connection closed
}

func (u *upstreams) targets() Targets {
	serve := func(f func(c net.Conn)) DialFunc {
		return func(context.Context) (net.Conn, error) {
			agentEnd, upEnd := net.Pipe()
			u.wg.Go(func() { defer upEnd.Close(); f(upEnd) })
			return agentEnd, nil
		}
	}
	return Targets{
		"echo": serve(func(c net.Conn) { io.Copy(c, c) }),
		// hello says hello and ends its output: the agent half-closes.
		"hello": serve(func(c net.Conn) { c.Write([]byte("hello")) }),
		// source writes until its connection breaks.
		"source": serve(func(c net.Conn) {
			buf := make([]byte, 32<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}),
		"sink": serve(func(c net.Conn) {
			n, _ := io.Copy(io.Discard, c)
			u.sinkClosed <- int(n)
		}),
	}
}

// overTransports runs body once per transport with a relay session and an
// agent session serving the in-memory upstreams.
func overTransports(t *testing.T, cfg *Config, body func(t *testing.T, relay, agent *Session, up *upstreams)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			relay, agent := tr.connect(t, cfg)
			up := &upstreams{sinkClosed: make(chan int, 1)}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan struct{})
			go func() { defer close(served); agent.Serve(ctx, up.targets(), time.Second) }()
			t.Cleanup(func() {
				cancel()
				relay.Close()
				agent.Close()
				<-served
				up.wg.Wait()
			})
			body(t, relay, agent, up)
		})
	}
}

// waitFor polls cond, for conditions on the far side of a real network.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 10 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func echo(t *testing.T, c net.Conn, payload []byte) {
	t.Helper()
	var got []byte
	var rerr error
	var rg sync.WaitGroup
	rg.Go(func() { got, rerr = io.ReadAll(io.LimitReader(c, int64(len(payload)))) })
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	rg.Wait()
	if rerr != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo: %d of %d bytes back, err %v", len(got), len(payload), rerr)
	}
}

func TestSessionEchoAndClose(t *testing.T) {
	overTransports(t, nil, func(t *testing.T, relay, agent *Session, _ *upstreams) {
		c, err := relay.Open(context.Background(), "echo")
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, 3<<20)
		rand.Read(payload)
		echo(t, c, payload)
		if relay.ActiveStreams() != 1 {
			t.Errorf("relay counts %d streams, want 1", relay.ActiveStreams())
		}
		c.Close()
		waitFor(t, "both sides at zero streams", func() bool { return relay.ActiveStreams() == 0 && agent.ActiveStreams() == 0 })
	})
}

// The agent passes its upstream's EOF on as a half-close; the relay's close
// makes the agent close the upstream at once.
func TestSessionHalfClose(t *testing.T) {
	overTransports(t, nil, func(t *testing.T, relay, agent *Session, up *upstreams) {
		c, err := relay.Open(context.Background(), "hello")
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "hello" {
			t.Fatalf("read %q, %v; want hello then EOF", got, err)
		}
		c.Close()

		c, err = relay.Open(context.Background(), "sink")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(make([]byte, 100<<10)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		select {
		case n := <-up.sinkClosed:
			if n != 100<<10 {
				t.Errorf("upstream read %d bytes before the close, want %d", n, 100<<10)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream was not closed after the relay closed its stream")
		}
		waitFor(t, "both sides at zero streams", func() bool { return relay.ActiveStreams() == 0 && agent.ActiveStreams() == 0 })
	})
}

// A stream whose reader stalls holds its window and stalls only itself; a
// write larger than the window completes once the reader reads.
func TestSessionFlowControl(t *testing.T) {
	overTransports(t, &Config{StreamWindow: 256 << 10}, func(t *testing.T, relay, _ *Session, _ *upstreams) {
		stalled, err := relay.Open(context.Background(), "source")
		if err != nil {
			t.Fatal(err)
		}
		defer stalled.Close()
		if _, err := io.ReadFull(stalled, make([]byte, 1024)); err != nil {
			t.Fatal(err)
		}
		// The source has filled the stalled stream's window by now, or soon.
		c, err := relay.Open(context.Background(), "echo")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		payload := make([]byte, 2<<20) // eight windows
		rand.Read(payload)
		echo(t, c, payload)
	})
}

// Defect "an exec session stalls through the relay": 200 000 bytes in one
// write, with the write side left open, must all come back.
func TestSessionLargeWriteWithWriteSideOpen(t *testing.T) {
	overTransports(t, nil, func(t *testing.T, relay, _ *Session, _ *upstreams) {
		payload := make([]byte, 200000)
		rand.Read(payload)
		for range 20 {
			c, err := relay.Open(context.Background(), "echo")
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(payload); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(payload))
			if n, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("%d of %d bytes back: %v", n, len(payload), err)
			}
			c.Close()
		}
	})
}

// The relay learns of the agent's go-away at once, not on its next Open:
// the session is skipped and the OnDrain hooks run.
func TestPeerGoAwayRunsOnDrain(t *testing.T) {
	overTransports(t, nil, func(t *testing.T, relay, agent *Session, _ *upstreams) {
		hook := make(chan struct{})
		relay.OnDrain(func() { close(hook) })
		c, err := relay.Open(context.Background(), "echo")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go agent.Shutdown(context.Background())
		select {
		case <-hook:
		case <-time.After(10 * time.Second):
			t.Fatal("the relay's OnDrain did not run after the agent's go-away")
		}
		if !relay.Draining() {
			t.Error("relay session not draining after the agent's go-away")
		}
		if _, err := relay.Open(context.Background(), "echo"); !errors.Is(err, ErrSessionClosed) {
			t.Errorf("Open on a drained session = %v, want ErrSessionClosed", err)
		}
		echo(t, c, []byte("still works")) // in flight: unaffected
		c.Close()
		select {
		case <-agent.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("agent still up after its last stream closed")
		}
	})
}
