package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/clusterconnect/clusterconnect/pkg/bufpool"
)

// ErrSessionClosed is returned by Open on a session that is closed or
// draining; a Pool then tries another session.
var ErrSessionClosed = errors.New("tunnel: session closed")

// ErrTooManyStreams is returned by Open when the session has MaxStreams open.
var ErrTooManyStreams = errors.New("tunnel: too many streams open on this session")

// Session is one tunnel: a yamux session over one WebSocket connection. On
// the relay it opens streams (Open); on the agent it accepts them (Serve).
type Session struct {
	mux    *yamux.Session
	cfg    Config
	log    *slog.Logger
	active atomic.Int64
	wg     sync.WaitGroup // streams being served (agent side)

	draining  atomic.Bool
	changed   chan struct{} // a token whenever a stream ends, for Shutdown
	closeOnce sync.Once
	cancel    context.CancelFunc // ends the WebSocket net.Conn's context

	// replica is the relay replica the agent reached (HeaderReplica of the
	// upgrade's answer); empty for a relay that is no fleet.
	replica string

	hookMu     sync.Mutex
	finished   bool
	pinger     *time.Timer // the next keepalive ping (see keepalive)
	hooks      []func()
	drained    bool // drain hooks have run
	drainHooks []func()
}

func newSession(ws net.Conn, cancel context.CancelFunc, cfg Config, client bool) (*Session, error) {
	conn := newWSConn(ws, cfg.Metrics)
	s := &Session{cfg: cfg, log: cfg.Logger, cancel: cancel, changed: make(chan struct{}, 1)}
	if m := cfg.Metrics; m != nil {
		m.Tunnels.Inc()
	}
	// Set before yamux starts its loops, which may close the conn at once.
	conn.onClose = s.finish
	// yamux notes the peer's go-away but tells nobody until the next
	// OpenStream fails; the relay needs to know at once, to stop offering the
	// session and to close its idle streams. The hooks run on their own
	// goroutine: the read loop must not wait for them.
	conn.onGoAway = func() { go s.startDrain() }
	var (
		mux *yamux.Session
		err error
	)
	// The relay opens streams and is the yamux client (odd stream IDs); the
	// agent accepts them and is the yamux server.
	if client {
		mux, err = yamux.Client(conn, cfg.yamux())
	} else {
		mux, err = yamux.Server(conn, cfg.yamux())
	}
	if err != nil {
		conn.Close() // runs finish
		return nil, fmt.Errorf("tunnel: start session: %w", err)
	}
	s.mux = mux
	s.hookMu.Lock()
	if !s.finished {
		s.pinger = time.AfterFunc(s.pingDelay(), s.keepalive)
	}
	s.hookMu.Unlock()
	return s, nil
}

// keepalive pings the peer and schedules the next ping, or closes the
// session when the ping fails (no answer within KeepAliveTimeout). It runs on
// a runtime timer, not a goroutine of its own: an idle tunnel parks no
// goroutine for its keepalive, and the runtime's timer heap is the one
// schedule every session's pings share. A ping holds a goroutine only for its
// round trip.
func (s *Session) keepalive() {
	if s.mux.IsClosed() {
		return
	}
	if _, err := s.mux.Ping(); err != nil {
		if !s.mux.IsClosed() {
			s.log.Warn("tunnel keepalive failed; closing the session", "err", err)
			s.Close()
		}
		return
	}
	s.hookMu.Lock()
	if !s.finished {
		s.pinger.Reset(s.pingDelay())
	}
	s.hookMu.Unlock()
}

// pingDelay is KeepAliveInterval less up to a tenth, at random, so that the
// pings of tunnels that connected together drift apart.
func (s *Session) pingDelay() time.Duration {
	d := s.cfg.KeepAliveInterval
	return d - rand.N(d/10+1)
}

func (s *Session) finish() {
	s.closeOnce.Do(func() {
		s.cancel()
		if m := s.cfg.Metrics; m != nil {
			m.Tunnels.Dec()
		}
		s.hookMu.Lock()
		hooks := s.hooks
		s.hooks, s.finished = nil, true
		if s.pinger != nil {
			s.pinger.Stop()
		}
		s.hookMu.Unlock()
		for _, f := range hooks {
			f()
		}
	})
}

// OnClose runs f once the session has ended (at once if it has already). f
// must not block: it runs on the path that closes the connection.
func (s *Session) OnClose(f func()) {
	s.hookMu.Lock()
	if !s.finished {
		s.hooks = append(s.hooks, f)
		s.hookMu.Unlock()
		return
	}
	s.hookMu.Unlock()
	f()
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// Closed reports whether the session has ended.
func (s *Session) Closed() bool { return s.mux.IsClosed() }

// Draining reports whether the session accepts no new streams: Shutdown
// was called on it, or the peer sent a go-away.
func (s *Session) Draining() bool { return s.draining.Load() }

// OnDrain runs f once when the session starts draining (at once if it
// already is): when Shutdown is called on this side, or when the peer's
// go-away arrives. f must not block for long.
//
// Streams that are open but idle keep a drain waiting until its deadline, and
// only their owner knows they are idle: the relay passes its http.Transport's
// CloseIdleConnections here, so that a draining session ends as soon as the
// requests in flight on it are done.
func (s *Session) OnDrain(f func()) {
	s.hookMu.Lock()
	if !s.drained {
		s.drainHooks = append(s.drainHooks, f)
		s.hookMu.Unlock()
		return
	}
	s.hookMu.Unlock()
	f()
}

// startDrain marks the session draining and runs the drain hooks once.
func (s *Session) startDrain() {
	s.draining.Store(true)
	s.hookMu.Lock()
	if s.drained {
		s.hookMu.Unlock()
		return
	}
	hooks := s.drainHooks
	s.drainHooks, s.drained = nil, true
	s.hookMu.Unlock()
	for _, f := range hooks {
		f()
	}
}

// release counts a stream as ended and wakes a Shutdown waiting for the last.
func (s *Session) release() {
	s.active.Add(-1)
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// ActiveStreams is the number of streams open now that this side opened or is serving.
func (s *Session) ActiveStreams() int { return int(s.active.Load()) }

// Close ends the session and every stream on it at once.
func (s *Session) Close() error {
	err := s.mux.Close()
	s.finish()
	return err
}

// Shutdown drains the session: no new stream is opened or accepted from
// now on, the peer is told so (a yamux go-away, which runs the peer's OnDrain
// hooks), this side's OnDrain hooks run (the relay closes its idle streams
// there), and the session is closed as soon as the last stream in flight has
// ended, or when ctx is done, whichever comes first.
func (s *Session) Shutdown(ctx context.Context) error {
	_ = s.mux.GoAway()
	s.startDrain()
	for s.active.Load() > 0 && !s.mux.IsClosed() {
		select {
		case <-ctx.Done():
			n := s.active.Load()
			s.Close()
			return fmt.Errorf("tunnel: drain ended with %d streams open: %w", n, ctx.Err())
		case <-s.changed:
		case <-s.mux.CloseChan():
		}
	}
	return s.Close()
}

// Open opens a stream to the named target through the agent and waits for
// the agent's reply. A refusal is a *StreamError. ctx bounds the whole
// opening (and Config.DialTimeout does when ctx has no earlier deadline); once
// Open returns, ctx no longer matters to the stream. Pool.OpenEarly opens
// without waiting.
func (s *Session) Open(ctx context.Context, target string) (net.Conn, error) {
	if !validTarget(target) {
		return nil, fmt.Errorf("tunnel: invalid target name %q", target)
	}
	start := time.Now()
	c, err := s.begin()
	if err != nil {
		return nil, err
	}
	deadline := start.Add(s.cfg.DialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	var buf [4 + MaxTargetLen]byte
	var refused error
	if _, err = c.Write(appendRequest(buf[:0], target)); err == nil {
		refused, err = s.answer(c, target, start)
	}
	stopped := stop()
	if err == nil && refused == nil && !stopped {
		err = ctx.Err() // the deadline was cut short by ctx
	}
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			s.cfg.Metrics.error("handshake")
			return nil, fmt.Errorf("tunnel: open stream to %q: %w", target, ctx.Err())
		}
		return nil, s.handshakeError(target, err)
	}
	if refused != nil {
		c.Close()
		return nil, refused
	}
	return c, nil
}

// begin opens a yamux stream, counted against MaxStreams, and sends nothing
// on it yet.
func (s *Session) begin() (*stream, error) {
	if s.draining.Load() || s.mux.IsClosed() {
		return nil, ErrSessionClosed
	}
	if n := s.active.Add(1); n > int64(s.cfg.MaxStreams) {
		s.release()
		return nil, ErrTooManyStreams
	}
	st, err := s.mux.OpenStream()
	if err != nil {
		s.release()
		if errors.Is(err, yamux.ErrRemoteGoAway) {
			// The peer is draining this session: stop offering it.
			s.startDrain()
		}
		if errors.Is(err, yamux.ErrRemoteGoAway) || errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, yamux.ErrStreamsExhausted) {
			return nil, fmt.Errorf("%w: %w", ErrSessionClosed, err)
		}
		return nil, fmt.Errorf("tunnel: open stream: %w", err)
	}
	if m := s.cfg.Metrics; m != nil {
		m.Streams.Inc()
	}
	return &stream{Stream: st, s: s}, nil
}

// answer reads the agent's reply to a request for target sent on c, opened
// at start. err is a failure to read it; refused is the agent's refusal, a
// *StreamError, wrapped in ErrSessionClosed when another tunnel may take the
// stream (too_many_streams, shutting_down). On success c's deadlines are
// cleared. answer does not close c.
func (s *Session) answer(c *stream, target string, start time.Time) (refused, err error) {
	version, code, msg, err := readReply(c)
	if err != nil {
		return nil, err
	}
	if version != Version && code != CodeUnsupportedVersion {
		// The agent answered in a version this side does not speak: its
		// code and message cannot be trusted to mean what they say here.
		code, msg = CodeUnsupportedVersion, fmt.Sprintf("agent replied with stream header version %d (code %d); this relay speaks version %d", version, uint8(code), Version)
	}
	if code != CodeOK {
		s.cfg.Metrics.error(code.String())
		se := &StreamError{Target: target, Code: code, Message: msg, Version: version}
		if code == CodeShuttingDown || code == CodeTooManyStreams {
			return fmt.Errorf("%w: %w", ErrSessionClosed, se), nil
		}
		return se, nil
	}
	_ = c.SetDeadline(time.Time{})
	if m := s.cfg.Metrics; m != nil {
		m.DialSeconds.Observe(time.Since(start).Seconds())
	}
	return nil, nil
}

// handshakeError is what a failure to send a stream's request or to read its
// reply (err) is reported as.
func (s *Session) handshakeError(target string, err error) error {
	s.cfg.Metrics.error("handshake")
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &timeoutError{fmt.Sprintf("tunnel: agent did not answer a stream to %q within %s", target, s.cfg.DialTimeout)}
	}
	if s.mux.IsClosed() {
		return fmt.Errorf("%w: %w", ErrSessionClosed, err)
	}
	return fmt.Errorf("tunnel: open stream to %q: %w", target, err)
}

// timeoutError is a net.Error whose Timeout is true.
type timeoutError struct{ msg string }

func (e *timeoutError) Error() string { return e.msg }
func (e *timeoutError) Timeout() bool { return true }

// Temporary is part of net.Error.
func (e *timeoutError) Temporary() bool { return true }

// stream is a yamux stream that keeps the session's counts right when closed.
type stream struct {
	*yamux.Stream
	s    *Session
	once sync.Once
}

func (c *stream) Close() error {
	err := c.Stream.Close()
	c.once.Do(func() {
		c.s.release()
		if m := c.s.cfg.Metrics; m != nil {
			m.Streams.Dec()
		}
	})
	return err
}

// DialFunc connects to an upstream the agent allows.
type DialFunc func(ctx context.Context) (net.Conn, error)

// Targets is an agent's allow-list: the stream targets it serves and how to
// reach each. A stream naming anything else is refused without a dial.
type Targets map[string]DialFunc

// Serve accepts streams on an agent's session and pipes each to its target,
// until the session ends or ctx is done; then it drains (Shutdown) for at most
// drain and returns. A drain of zero means the session's
// Config.DrainTimeout.
func (s *Session) Serve(ctx context.Context, targets Targets, drain time.Duration) error {
	if drain <= 0 {
		drain = s.cfg.DrainTimeout
	}
	stop := context.AfterFunc(ctx, func() {
		dctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		if err := s.Shutdown(dctx); err != nil {
			s.log.Warn("tunnel drain incomplete", "err", err)
		}
	})
	defer stop()
	for {
		st, err := s.mux.AcceptStream()
		if err != nil {
			s.wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tunnel: session ended: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveStream(ctx, st, targets)
		}()
	}
}

func (s *Session) serveStream(ctx context.Context, st *yamux.Stream, targets Targets) {
	c := &stream{Stream: st, s: s}
	n := s.active.Add(1)
	if m := s.cfg.Metrics; m != nil {
		m.Streams.Inc()
	}
	defer c.Close()
	start := time.Now()
	_ = st.SetDeadline(start.Add(s.cfg.DialTimeout))
	refuse := func(code Code, msg string) {
		s.cfg.Metrics.error(code.String())
		s.log.Debug("stream refused", "code", code.String(), "msg", msg)
		var buf [4 + MaxMessageLen]byte
		_, _ = st.Write(appendReply(buf[:0], code, msg))
	}
	version, target, err := readRequest(st)
	switch {
	case errors.Is(err, io.EOF):
		// Closed before its header: a relay's early stream that was never
		// used (SPEC.md §3, "Early data"). Nothing to answer.
		return
	case err != nil:
		refuse(CodeMalformedHeader, err.Error())
		return
	case version != Version:
		refuse(CodeUnsupportedVersion, fmt.Sprintf("stream header version %d is not supported; this agent speaks version %d", version, Version))
		return
	case s.draining.Load() || ctx.Err() != nil:
		refuse(CodeShuttingDown, "agent is shutting down; retry on another tunnel")
		return
	case n > int64(s.cfg.MaxStreams):
		refuse(CodeTooManyStreams, fmt.Sprintf("agent has %d streams open on this tunnel, the limit", s.cfg.MaxStreams))
		return
	}
	dial, ok := targets[target]
	if !ok {
		refuse(CodeTargetNotAllowed, fmt.Sprintf("target %q is not on this agent's allow-list", target))
		return
	}
	// The relay waits DialTimeout from before the header was sent; the
	// upstream dial gets less, so that a dial that times out is still
	// reported as dial_failed (502) and not as the relay's timeout (504).
	dctx, cancel := context.WithDeadline(ctx, start.Add(dialBudget(s.cfg.DialTimeout)))
	up, err := dial(dctx)
	cancel()
	if err != nil {
		refuse(CodeDialFailed, fmt.Sprintf("agent could not reach %q: %v", target, err))
		return
	}
	defer up.Close()
	if m := s.cfg.Metrics; m != nil {
		m.DialSeconds.Observe(time.Since(start).Seconds())
	}
	var buf [4]byte
	if _, err := st.Write(appendReply(buf[:0], CodeOK, "")); err != nil {
		return
	}
	_ = st.SetDeadline(time.Time{})
	pipe(c, up)
}

// pipe joins a stream and its upstream connection until both are done.
//
// The relay never half-closes a stream: its FIN means it is finished with the
// stream (an HTTP client closing its connection), so the upstream is closed at
// once, whatever it is still sending. The upstream's EOF, in contrast, is
// passed on as a FIN (a half-close), so the response's end reaches the relay,
// which then closes; if it does not, yamux resets the stream after
// CloseTimeout.
func pipe(st *stream, up net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = bufpool.Copy(up, st)
		up.Close()
		st.Close()
	}()
	// The upstream's answers are what moves in bulk (responses, logs,
	// watch bursts): read them in large pieces while they keep coming.
	if _, err := bufpool.CopyBulk(st, up); err != nil {
		up.Close()
	}
	st.Close() // a FIN: the relay reads EOF
	<-done
}

// Replica names the relay replica an agent's session reached (the
// HeaderReplica the relay answered the upgrade with); empty when the relay
// is a single process or the relay side.
func (s *Session) Replica() string { return s.replica }
