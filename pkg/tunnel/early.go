package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MaxEarlyData is how many bytes a stream from OpenEarly sends before the
// agent's reply has arrived. They are kept until then, so that they can be
// sent again on another tunnel if this one's agent refuses the stream with
// too_many_streams or shutting_down; a writer beyond it waits for the reply.
const MaxEarlyData = 64 << 10

// OpenEarly opens a stream to target on the least busy live session without
// waiting for the agent's reply (SPEC.md §3, "Early data"): the request
// header goes out with the first bytes written, and the reply is read before
// the first byte of the answer. A small request and its response so cost one
// round trip, not two.
//
// What Open would have returned as an error then comes from Read or Write:
// the agent's refusal as a *StreamError, ErrNoTunnel (wrapping the last
// refusal) when every tunnel refused with too_many_streams or shutting_down
// — the stream moves to the next tunnel with its early bytes first — and a
// timeout (a net.Error) when the agent does not answer within DialTimeout of
// the header. OpenEarly itself fails only when no tunnel is up, ctx is done,
// or target is not a valid name. Deadlines set before the reply apply from
// the reply on.
func (p *Pool) OpenEarly(ctx context.Context, target string) (net.Conn, error) {
	if !validTarget(target) {
		return nil, fmt.Errorf("tunnel: invalid target name %q", target)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tunnel: open stream to %q: %w", target, err)
	}
	c := &earlyConn{target: target, cands: p.candidates()}
	if deadline, ok := ctx.Deadline(); ok {
		c.ctxDeadline = deadline
	}
	if len(c.cands) == 0 {
		return nil, ErrNoTunnel
	}
	c.mu.Lock()
	err := c.next()
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// earlyConn is a stream from OpenEarly. Until the reply is known, mu guards
// everything below it and Writes go out under it (so that moving to another
// tunnel cannot interleave with them); once the stream is settled, cur never
// changes and reads and writes go to it without a lock.
type earlyConn struct {
	target      string
	ctxDeadline time.Time

	settled atomic.Bool // the reply was read; cur is final, or err is set
	rmu     sync.Mutex  // one reader of the reply at a time

	mu      sync.Mutex
	cands   []*Session // tunnels not tried yet
	cur     *stream
	start   time.Time // when cur's header was sent
	hdrSent bool      // cur's request header is out
	early   []byte    // bytes written before the reply, to send again elsewhere
	last    error     // the last retryable refusal
	err     error     // the stream failed: returned by every Read and Write
	closed  bool
	rdl     time.Time // deadlines set before the reply
	wdl     time.Time
}

// next moves to the next candidate tunnel; the caller holds mu. The header
// and any early bytes go out at once on a new tunnel (on the first, the
// header waits for the first Write or Read).
func (c *earlyConn) next() error {
	moving := c.cur != nil
	for len(c.cands) > 0 {
		s := c.cands[0]
		c.cands = c.cands[1:]
		st, err := s.begin()
		if err != nil {
			if !errors.Is(err, ErrSessionClosed) && !errors.Is(err, ErrTooManyStreams) {
				return err
			}
			c.last = err
			continue
		}
		c.cur, c.hdrSent = st, false
		if !moving {
			return nil
		}
		if err := c.sendHeader(c.early); err != nil {
			st.Close()
			c.last = st.s.handshakeError(c.target, err)
			continue
		}
		return nil
	}
	if c.last == nil {
		return ErrNoTunnel
	}
	return fmt.Errorf("%w (last: %w)", ErrNoTunnel, c.last)
}

// sendHeader sends cur's request header with p in one frame; the caller
// holds mu.
func (c *earlyConn) sendHeader(p []byte) error {
	bp := framePool.Get().(*[]byte)
	msg := append(appendRequest((*bp)[:0], c.target), p...)
	c.start, c.hdrSent = time.Now(), true
	deadline := c.start.Add(c.cur.s.cfg.DialTimeout)
	if !c.ctxDeadline.IsZero() && c.ctxDeadline.Before(deadline) {
		deadline = c.ctxDeadline
	}
	_ = c.cur.SetDeadline(deadline)
	_, err := c.cur.Write(msg)
	if cap(msg) <= maxPooledFrame {
		*bp = msg[:0]
		framePool.Put(bp)
	}
	return err
}

func (c *earlyConn) Write(p []byte) (int, error) {
	if c.settled.Load() {
		if c.err != nil {
			return 0, c.err
		}
		return c.cur.Write(p)
	}
	c.mu.Lock()
	switch {
	case c.settled.Load():
		c.mu.Unlock()
		return c.Write(p)
	case c.closed:
		c.mu.Unlock()
		return 0, net.ErrClosed
	case len(c.early)+len(p) > MaxEarlyData:
		// Too much to keep: the rest waits for the reply.
		c.mu.Unlock()
		if err := c.settle(); err != nil {
			return 0, err
		}
		return c.cur.Write(p)
	}
	var err error
	if !c.hdrSent {
		err = c.sendHeader(p)
	} else {
		_, err = c.cur.Write(p)
	}
	// Kept even when the write failed (the tunnel reset or closed under
	// it): the reply, or that failure, is then the answer, and a move to
	// another tunnel sends these bytes too.
	c.early = append(c.early, p...)
	c.mu.Unlock()
	if err == nil {
		return len(p), nil
	}
	if err := c.settle(); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *earlyConn) Read(p []byte) (int, error) {
	if !c.settled.Load() {
		if err := c.settle(); err != nil {
			return 0, err
		}
	} else if c.err != nil {
		return 0, c.err
	}
	return c.cur.Read(p)
}

// settle reads the agent's reply, moving to the next tunnel on a retryable
// refusal, and returns the stream's error, if it failed.
func (c *earlyConn) settle() error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for !c.settled.Load() {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return net.ErrClosed
		}
		if !c.hdrSent {
			if err := c.sendHeader(nil); err != nil {
				// Nothing of the caller's was sent: another tunnel may take it.
				c.cur.Close()
				c.last = c.cur.s.handshakeError(c.target, err)
				if err := c.next(); err != nil {
					c.fail(err)
					c.mu.Unlock()
					break
				}
				c.mu.Unlock()
				continue
			}
		}
		st, start := c.cur, c.start
		c.mu.Unlock()

		refused, err := st.s.answer(st, c.target, start)
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return net.ErrClosed
		case err != nil:
			st.Close()
			c.fail(st.s.handshakeError(c.target, err))
		case refused != nil && errors.Is(refused, ErrSessionClosed):
			st.Close()
			c.last = refused
			if err := c.next(); err != nil {
				c.fail(err)
			}
		case refused != nil:
			st.Close()
			c.fail(refused)
		default:
			c.early = nil
			_ = st.SetReadDeadline(c.rdl)
			_ = st.SetWriteDeadline(c.wdl)
			c.settled.Store(true)
		}
		c.mu.Unlock()
	}
	return c.err
}

// fail ends the stream with err; the caller holds mu.
func (c *earlyConn) fail(err error) {
	c.err, c.early = err, nil
	c.settled.Store(true)
}

func (c *earlyConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if !c.settled.Load() {
		// Wake a read of the reply: a yamux close is only a half-close.
		_ = c.cur.SetDeadline(time.Unix(1, 0))
	}
	return c.cur.Close() // the stream's count drops once, however it ended
}

func (c *earlyConn) LocalAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.LocalAddr()
}

func (c *earlyConn) RemoteAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.RemoteAddr()
}

func (c *earlyConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *earlyConn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(t, &c.rdl, func(st *stream) error { return st.SetReadDeadline(t) })
}

func (c *earlyConn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(t, &c.wdl, func(st *stream) error { return st.SetWriteDeadline(t) })
}

// setDeadline keeps t in *pending until the reply (settle applies it), and
// sets it on the stream after.
func (c *earlyConn) setDeadline(t time.Time, pending *time.Time, set func(*stream) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.settled.Load() {
		*pending = t
		return nil
	}
	if c.err != nil {
		return c.err
	}
	return set(c.cur)
}
