package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// earlyAgent serves targets on a fresh relay/agent pair over TCP loopback
// and returns the relay's session; agentCfg is the agent's Config.
func earlyAgent(t *testing.T, agentCfg *Config, targets Targets) *Session {
	t.Helper()
	relay, agent := tcpSessionsWith(t, nil, agentCfg)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); agent.Serve(ctx, targets, time.Second) }()
	t.Cleanup(func() { cancel(); relay.Close(); agent.Close(); <-served })
	return relay
}

// tcpSessionsWith is tcpSessions with a Config for each side.
func tcpSessionsWith(t *testing.T, relayCfg, agentCfg *Config) (relay, agent *Session) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	ac, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc := <-accepted
	if rc == nil {
		t.Fatal("accept failed")
	}
	if relay, err = newSessionOver(rc, relayCfg, true); err != nil {
		t.Fatal(err)
	}
	if agent, err = newSessionOver(ac, agentCfg, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close(); agent.Close() })
	return relay, agent
}

// openEarly opens an early stream to target on relay alone, closed and
// bounded (10 s) for the test.
func openEarly(t *testing.T, relay *Session, target string) net.Conn {
	t.Helper()
	var p Pool
	p.Add(relay)
	c, err := p.OpenEarly(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// pipeTarget is a DialFunc whose upstream echoes; gate, when not nil, holds
// the dial until it is closed.
func pipeTarget(t *testing.T, gate <-chan struct{}) DialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		if gate != nil {
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		a, b := net.Pipe()
		go func() { defer b.Close(); io.Copy(b, b) }()
		return a, nil
	}
}

// SPEC §3, early data: bytes written go out before the agent has answered —
// here its upstream dial is held until after the Write returned — and the
// answer comes back once it does.
func TestOpenEarlySendsBeforeTheReply(t *testing.T) {
	gate := make(chan struct{})
	relay := earlyAgent(t, nil, Targets{"echo": pipeTarget(t, gate)})
	c := openEarly(t, relay, "echo")
	if _, err := c.Write([]byte("early")); err != nil {
		t.Fatalf("write before the reply: %v", err)
	}
	close(gate) // only now can the agent reach its upstream and answer
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "early" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	// More than MaxEarlyData both ways once settled.
	big := make([]byte, 3*MaxEarlyData)
	rand.Read(big)
	go c.Write(big)
	got := make([]byte, len(big))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("large echo: %v, equal %v", err, bytes.Equal(got, big))
	}
}

// A writer with more than MaxEarlyData before the reply waits for it, and
// nothing is lost or reordered.
func TestOpenEarlyLargeFirstWrite(t *testing.T) {
	relay := earlyAgent(t, nil, Targets{"echo": pipeTarget(t, nil)})
	c := openEarly(t, relay, "echo")
	big := make([]byte, MaxEarlyData/2*5)
	rand.Read(big)
	errc := make(chan error, 1)
	go func() {
		var err error
		for b := big; len(b) > 0 && err == nil; b = b[min(len(b), 10000):] {
			_, err = c.Write(b[:min(len(b), 10000)])
		}
		errc <- err
	}()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("echo: %v, equal %v", err, bytes.Equal(got, big))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// A refusal comes from Read and then from every Write, as the *StreamError
// Open would have returned.
func TestOpenEarlyRefusal(t *testing.T) {
	relay := earlyAgent(t, nil, Targets{"echo": pipeTarget(t, nil)})
	c := openEarly(t, relay, "nope")
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatalf("early write: %v", err)
	}
	var se *StreamError
	if _, err := c.Read(make([]byte, 1)); !errors.As(err, &se) || se.Code != CodeTargetNotAllowed {
		t.Fatalf("Read = %v, want the agent's target_not_allowed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.As(err, &se) {
		t.Fatalf("Write after the refusal = %v, want it again", err)
	}
}

// SPEC §3: a stream refused with too_many_streams moves to the next tunnel
// with its early bytes, and the caller sees only the answer; when every
// tunnel refuses, the error is ErrNoTunnel wrapping the last refusal.
func TestOpenEarlyMovesToAnotherTunnel(t *testing.T) {
	// Tunnel a's agent allows one stream; the relay does not know that.
	a := earlyAgent(t, &Config{MaxStreams: 1}, Targets{"echo": pipeTarget(t, nil)})
	b := earlyAgent(t, nil, Targets{"echo": pipeTarget(t, nil)})
	ctx := context.Background()
	// One stream held on a fills it; two on b make a the least busy.
	held := []net.Conn{}
	for _, s := range []*Session{a, b, b} {
		c, err := s.Open(ctx, "echo")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var p Pool
	p.Add(a)
	p.Add(b)
	c, err := p.OpenEarly(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if c.(*earlyConn).cur.s != a {
		t.Fatal("the test expects the stream to start on tunnel a, the least busy")
	}
	if _, err := c.Write([]byte("moved")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "moved" {
		t.Fatalf("echo after the move = %q, %v", buf, err)
	}
	if c.(*earlyConn).cur.s != b {
		t.Fatal("the stream did not move to tunnel b")
	}

	// Only a in the pool: nowhere to move.
	var only Pool
	only.Add(a)
	c2, err := only.OpenEarly(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("x"))
	var se *StreamError
	if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, ErrNoTunnel) || !errors.As(err, &se) || se.Code != CodeTooManyStreams {
		t.Fatalf("Read with every tunnel full = %v, want ErrNoTunnel wrapping too_many_streams", err)
	}
}

// A stream that is closed before any byte was written never reached the
// agent as a request: the agent does not count it as a malformed header.
func TestOpenEarlyClosedUnused(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry(), "t")
	relay := earlyAgent(t, &Config{Metrics: m}, Targets{"echo": pipeTarget(t, nil)})
	var p Pool
	p.Add(relay)
	c, err := p.OpenEarly(context.Background(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// yamux drops the stream on the relay once the agent has closed its side,
	// which it does when it is done with the stream.
	waitFor(t, "the agent done with the unused stream", func() bool { return relay.mux.NumStreams() == 0 })
	if n := testutil.ToFloat64(m.Errors.WithLabelValues(CodeMalformedHeader.String())); n != 0 {
		t.Fatalf("agent counted %v malformed headers for a stream closed unused", n)
	}
}

func TestOpenEarlyNoTunnel(t *testing.T) {
	var p Pool
	if _, err := p.OpenEarly(context.Background(), "echo"); !errors.Is(err, ErrNoTunnel) {
		t.Fatalf("OpenEarly on an empty pool = %v, want ErrNoTunnel", err)
	}
	if _, err := p.OpenEarly(context.Background(), "bad name"); err == nil {
		t.Fatal("OpenEarly accepted an invalid target name")
	}
}
