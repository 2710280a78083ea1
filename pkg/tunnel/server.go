package tunnel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
)

// Accept upgrades an agent's request to a tunnel and returns the relay's
// side of the session; the caller opens streams on it with Open. The caller
// has already authenticated the request. The session lives until it is closed
// or the connection fails, independent of r's context.
func Accept(w http.ResponseWriter, r *http.Request, cfg *Config) (*Session, error) {
	c := cfg.withDefaults()
	ws, err := websocket.Accept(smallBuffers{w}, r, &websocket.AcceptOptions{
		Subprotocols: []string{Subprotocol},
		// Agents are not browsers; there is no Origin to check.
		InsecureSkipVerify: true,
	})
	if err != nil {
		c.Metrics.error("accept")
		return nil, fmt.Errorf("tunnel: accept: %w", err)
	}
	if ws.Subprotocol() != Subprotocol {
		ws.Close(websocket.StatusPolicyViolation, "subprotocol "+Subprotocol+" required")
		c.Metrics.error("subprotocol")
		return nil, fmt.Errorf("tunnel: agent did not offer subprotocol %s", Subprotocol)
	}
	life, stop := context.WithCancel(context.Background())
	return newSession(websocket.NetConn(life, ws, websocket.MessageBinary), stop, c, true)
}

// smallBuffers is the ResponseWriter Accept hands the WebSocket library.
// Its Hijack returns the connection with a 16-byte reader in place of the
// 4 KiB one net/http keeps for it: the TLS connection below already holds
// a whole decrypted record, so a large buffer above it only copies, and an
// idle tunnel held it for its life. Payload reads of 16 bytes or more go
// straight to the TLS connection. A client that sent bytes behind its
// upgrade request keeps net/http's reader, which holds them. (A small
// writer over a frame batcher was measured too, and cost throughput both
// ways: docs/performance.md.)
type smallBuffers struct{ http.ResponseWriter }

func (s smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Reader.Buffered() > 0 {
		// The client sent more behind its upgrade request: the library
		// takes those bytes from the reader that holds them.
		return c, brw, nil
	}
	return c, bufio.NewReadWriter(bufio.NewReaderSize(c, 16), brw.Writer), nil
}

func (s smallBuffers) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ErrNoTunnel is returned by Pool.Open when no session is connected.
var ErrNoTunnel = errors.New("tunnel: no tunnel connected")

// Pool is the relay's set of sessions to one agent (one cluster). Open
// spreads streams over them and moves on when one has died or is draining, so
// losing one tunnel does not fail new streams while another is up.
type Pool struct {
	mu       sync.Mutex
	sessions []*Session
	next     atomic.Uint32
}

// Add puts s in the pool and removes it again when it ends.
func (p *Pool) Add(s *Session) {
	p.mu.Lock()
	p.sessions = append(p.sessions, s)
	p.mu.Unlock()
	s.OnClose(func() { p.remove(s) })
}

func (p *Pool) remove(s *Session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.sessions {
		if x == s {
			p.sessions = append(p.sessions[:i], p.sessions[i+1:]...)
			return
		}
	}
}

// Len is the number of sessions that are up and not draining.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.sessions {
		if !s.Closed() && !s.Draining() {
			n++
		}
	}
	return n
}

// Sessions returns the sessions in the pool now.
func (p *Pool) Sessions() []*Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Session(nil), p.sessions...)
}

// Open opens a stream to target on the least busy live session, trying the
// others if that one turns out closed. It returns ErrNoTunnel when none is
// up, and the agent's *StreamError if the agent refused.
func (p *Pool) Open(ctx context.Context, target string) (net.Conn, error) {
	cands := p.candidates()
	if len(cands) == 0 {
		return nil, ErrNoTunnel
	}
	var last error
	for _, s := range cands {
		c, err := s.Open(ctx, target)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, ErrSessionClosed) && !errors.Is(err, ErrTooManyStreams) {
			return nil, err
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w (last: %w)", ErrNoTunnel, last)
}

// candidates orders the live sessions, least active streams first; ties are
// broken round-robin so idle tunnels share new streams.
func (p *Pool) candidates() []*Session {
	p.mu.Lock()
	live := make([]*Session, 0, len(p.sessions))
	for _, s := range p.sessions {
		if !s.Closed() && !s.Draining() {
			live = append(live, s)
		}
	}
	p.mu.Unlock()
	if len(live) < 2 {
		return live
	}
	off := int(p.next.Add(1)) % len(live)
	live = append(live[off:], live[:off]...)
	// Insertion sort by load: the list is a handful of tunnels.
	for i := 1; i < len(live); i++ {
		for j := i; j > 0 && live[j].ActiveStreams() < live[j-1].ActiveStreams(); j-- {
			live[j], live[j-1] = live[j-1], live[j]
		}
	}
	return live
}

// Close closes every session in the pool at once.
func (p *Pool) Close() {
	for _, s := range p.Sessions() {
		s.Close()
	}
}

// Shutdown drains every session in the pool (see Session.Shutdown).
func (p *Pool) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, 0)
	var mu sync.Mutex
	for _, s := range p.Sessions() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Shutdown(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
