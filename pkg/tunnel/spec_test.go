package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"
)

// Tests that pin SPEC.md points the code once got wrong. Timers run on
// synctest's fake clock over in-memory pipes.

// bubble runs f in a synctest bubble. yamux keeps its timers in a
// sync.Pool shared by every session in the process; a timer made in a bubble
// must not be reused outside it (or in the next one), which is a fatal error,
// so the pool is emptied (two collections: the pool's victim cache) before
// anything else runs.
func bubble(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	synctest.Test(t, f)
	runtime.GC()
	runtime.GC()
}

// pipeSessions is overConns over a net.Pipe, for use inside a bubble.
func pipeSessions(t *testing.T, cfg *Config) (relay, agent *Session) {
	rc, ac := net.Pipe()
	return overConns(t, rc, ac, cfg)
}

// serveEcho serves agent with an in-memory echo target until ctx is done.
func serveEcho(ctx context.Context, agent *Session, drain time.Duration) (done chan struct{}, up *upstreams) {
	up = &upstreams{sinkClosed: make(chan int, 1)}
	done = make(chan struct{})
	go func() { defer close(done); agent.Serve(ctx, up.targets(), drain); up.wg.Wait() }()
	return done, up
}

// SPEC §3: the relay checks the version of the agent's reply.
func TestOpenRejectsReplyOfAnotherVersion(t *testing.T) {
	relay, agent := pipeSessions(t, nil)
	go func() {
		st, err := agent.mux.AcceptStream()
		if err != nil {
			return
		}
		defer st.Close()
		readRequest(st)
		st.Write([]byte{2, byte(CodeOK), 0, 0}) // a version-2 "ok"
		io.Copy(io.Discard, st)
	}()
	c, err := relay.Open(context.Background(), "echo")
	var se *StreamError
	if !errors.As(err, &se) || se.Code != CodeUnsupportedVersion || se.Version != 2 {
		if c != nil {
			c.Close()
		}
		t.Fatalf("Open with a version-2 reply = %v, want a StreamError unsupported_version naming version 2", err)
	}
	if relay.ActiveStreams() != 0 {
		t.Errorf("the refused stream still counts: %d", relay.ActiveStreams())
	}
}

// SPEC §3: the reply message is UTF-8, so a long one is cut on a rune
// boundary and invalid bytes are replaced.
func TestReplyMessageStaysUTF8(t *testing.T) {
	for _, msg := range []string{
		strings.Repeat("a", MaxMessageLen-1) + "é and more",
		strings.Repeat("€", MaxMessageLen), // 3 bytes each
		"upstream said \xff\xfe",
	} {
		_, _, got, err := readReply(strings.NewReader(string(appendReply(nil, CodeDialFailed, msg))))
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.ValidString(got) || len(got) > MaxMessageLen {
			t.Errorf("message of %d bytes sent as %d bytes, valid UTF-8 %v", len(msg), len(got), utf8.ValidString(got))
		}
		if valid := strings.ToValidUTF8(msg, "\uFFFD"); !strings.HasPrefix(valid, got) || len(got) < min(len(valid), MaxMessageLen-3) {
			t.Errorf("message cut to %d bytes, more than a rune short of %d", len(got), MaxMessageLen)
		}
	}
}

// SPEC §4: the default backoff ceiling is 8 s.
func TestBackoffDefaults(t *testing.T) {
	var b Backoff
	var over4 bool
	for range 2000 {
		d := b.Delay(30)
		if d <= 0 || d > 8*time.Second {
			t.Fatalf("Delay(30) = %v, want in (0, 8s]", d)
		}
		over4 = over4 || d > 4*time.Second
	}
	if !over4 {
		t.Error("no Delay(30) over 4 s in 2000 draws: the ceiling is below 8 s")
	}
	if d := b.Delay(0); d > DefaultBackoffMin {
		t.Errorf("Delay(0) = %v, over the 500 ms minimum", d)
	}
}

// SPEC §4: before attempt k the Client waits Delay(k): the first retry is
// attempt 1, with a ceiling of twice the minimum.
func TestClientBackoffExponent(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	url := "wss://" + ln.Addr().String() + "/tunnel"
	ln.Close() // connections are refused at once
	c, err := NewClient(ClientOptions{URL: url, Tunnels: 1, Targets: Targets{"x": nil}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var attempts []int
	ctx, cancel := context.WithCancel(context.Background())
	c.delay = func(attempt int) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		if attempts = append(attempts, attempt); len(attempts) == 3 {
			cancel()
		}
		return time.Millisecond
	}
	c.Run(ctx)
	if len(attempts) != 3 || attempts[0] != 1 || attempts[1] != 2 || attempts[2] != 3 {
		t.Fatalf("waits before attempts %v, want [1 2 3]", attempts)
	}
}

// SPEC §4: Serve's zero drain means Config.DrainTimeout.
func TestServeDrainDefaultsToConfig(t *testing.T) {
	bubble(t, func(t *testing.T) {
		relay, agent := pipeSessions(t, &Config{DrainTimeout: 5 * time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		done, _ := serveEcho(ctx, agent, 0)
		c, err := relay.Open(context.Background(), "echo")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		cancel()
		<-agent.Done()
		if got := time.Since(start); got != 5*time.Second {
			t.Errorf("a busy session was closed %v after Serve's context ended, want the 5 s DrainTimeout", got)
		}
		relay.Close()
		<-done
	})
}

// Draining stops new streams at once, lets the peer know, and ends as soon
// as the last stream in flight closes, not at the drain timeout.
func TestDrainEndsWithLastStream(t *testing.T) {
	bubble(t, func(t *testing.T) {
		relay, agent := pipeSessions(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done, _ := serveEcho(ctx, agent, 30*time.Second)
		c, err := relay.Open(context.Background(), "echo")
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		cancel()
		synctest.Wait()
		if !relay.Draining() || !agent.Draining() {
			t.Fatalf("draining: relay %v, agent %v; want both", relay.Draining(), agent.Draining())
		}
		if _, err := relay.Open(context.Background(), "echo"); !errors.Is(err, ErrSessionClosed) {
			t.Errorf("Open while draining = %v, want ErrSessionClosed", err)
		}
		time.Sleep(time.Second)
		echo(t, c, []byte("in flight"))
		c.Close()
		<-agent.Done()
		if got := time.Since(start); got != time.Second {
			t.Errorf("drain took %v, want the 1 s until the last stream closed", got)
		}
		<-done
	})
}

// A relay that closes its idle streams from OnDrain lets the agent's drain
// end at once; the relay's own Shutdown runs its hooks too.
func TestDrainClosesIdleStreamsThroughOnDrain(t *testing.T) {
	bubble(t, func(t *testing.T) {
		relay, agent := pipeSessions(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done, _ := serveEcho(ctx, agent, 30*time.Second)
		idle, err := relay.Open(context.Background(), "echo")
		if err != nil {
			t.Fatal(err)
		}
		relay.OnDrain(func() { idle.Close() }) // what http.Transport.CloseIdleConnections does
		start := time.Now()
		cancel()
		<-agent.Done()
		if got := time.Since(start); got != 0 {
			t.Errorf("drain with only an idle stream took %v, want no wait", got)
		}
		<-done

		relay2, agent2 := pipeSessions(t, nil)
		ran := false
		relay2.OnDrain(func() { ran = true })
		if err := relay2.Shutdown(context.Background()); err != nil || !ran {
			t.Errorf("relay Shutdown = %v, hook ran %v", err, ran)
		}
		<-agent2.Done()
	})
}

// SPEC §4: a peer that stops answering is noticed within KeepAliveInterval
// plus KeepAliveTimeout.
func TestKeepAliveEndsDeadSession(t *testing.T) {
	bubble(t, func(t *testing.T) {
		rc, ac := net.Pipe()
		dead := &stallConn{Conn: rc, stall: make(chan struct{}), closed: make(chan struct{})}
		cfg := &Config{KeepAliveInterval: 15 * time.Second, KeepAliveTimeout: 10 * time.Second}
		relay, agent := overConns(t, dead, ac, cfg)
		start := time.Now()
		close(dead.stall) // the relay hears nothing more
		<-relay.Done()
		// The first ping goes out up to a tenth before the interval.
		if got := time.Since(start); got < 13500*time.Millisecond || got > 25*time.Second {
			t.Errorf("dead peer noticed after %v, want within 15 s + 10 s", got)
		}
		agent.Close()
	})
}

// stallConn stops delivering reads once stall is closed, like a peer gone
// silent.
type stallConn struct {
	net.Conn
	stall     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func (c *stallConn) Read(p []byte) (int, error) {
	for {
		select {
		case <-c.stall:
			<-c.closed
			return 0, net.ErrClosed
		default:
		}
		n, err := c.Conn.Read(p)
		select {
		case <-c.stall:
			// What a read already waiting brings after the stall is lost
			// too: the peer is silent from then on.
			continue
		default:
			return n, err
		}
	}
}

func (c *stallConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// SPEC §1: the agent speaks TLS 1.3 whatever its TLS config allows, and
// names itself in User-Agent.
func TestDialRequiresTLS13AndSendsUserAgent(t *testing.T) {
	ua := make(chan string, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ua <- r.UserAgent()
		http.Error(w, "no", http.StatusNotFound)
	}))
	srv.EnableHTTP2 = false
	srv.TLS = &tls.Config{MaxVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	tlsCfg := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tlsCfg.MinVersion = tls.VersionTLS12
	_, err := Dial(context.Background(), srv.URL, &DialOptions{TLSConfig: tlsCfg})
	var re *RefusedError
	if err == nil || errors.As(err, &re) {
		t.Fatalf("Dial to a TLS 1.2 relay = %v, want a handshake failure", err)
	}

	srv2 := httptest.NewUnstartedServer(srv.Config.Handler)
	srv2.EnableHTTP2 = false
	srv2.StartTLS()
	defer srv2.Close()
	_, err = Dial(context.Background(), srv2.URL, &DialOptions{TLSConfig: srv2.Client().Transport.(*http.Transport).TLSClientConfig})
	if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
		t.Fatalf("Dial = %v, want the relay's 404", err)
	}
	if got := <-ua; got != UserAgent {
		t.Errorf("User-Agent %q, want %q", got, UserAgent)
	}
}
