package audit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

// Metered is what Meter has seen of one request: its status and the bytes
// both ways, through an upgrade too. Its methods are safe to call while the
// request is being served.
type Metered struct {
	start                time.Time
	method, path, client string

	status    atomic.Int64
	in, out   atomic.Int64
	hijacked  atomic.Bool
	closed    atomic.Bool  // the hijacked conn was closed ...
	lived     atomic.Int64 // ... this long after start (set before closed)
	done      chan struct{}
	closeOnce sync.Once

	onHijack, onClose func()
}

// Meter wraps w and r.Body to count what passes. Serve the request with
// the returned writer and request. The writer keeps what the server's
// offers working: Flush and FlushError, Hijack (the hijacked conn is
// counted both ways until it is closed), and, through Unwrap,
// http.ResponseController's SetReadDeadline, SetWriteDeadline and
// EnableFullDuplex.
//
// For a hijacked request, BytesIn and BytesOut are the raw bytes of the
// connection after the request head: they include the response head the
// hijacker writes (ReverseProxy's 101 Switching Protocols) and whatever the
// client sent after the request head, buffered by the server or not.
func Meter(w http.ResponseWriter, r *http.Request) (*Metered, http.ResponseWriter, *http.Request) {
	m := &Metered{start: time.Now(), method: r.Method, path: r.URL.RequestURI(), client: clientHost(r.RemoteAddr), done: make(chan struct{})}
	if r.Body != nil && r.Body != http.NoBody {
		r2 := *r
		r2.Body = &meteredBody{ReadCloser: r.Body, m: m}
		r = &r2
	}
	return m, &meteredWriter{ResponseWriter: w, m: m}, r
}

// OnHijack sets f to run when the handler hijacks the connection (an
// upgrade's session starts), before the conn goes to the handler. Set it
// before serving.
func (m *Metered) OnHijack(f func()) { m.onHijack = f }

// OnClose sets f to run when the hijacked connection is first closed (the
// session ended). Set it before serving.
func (m *Metered) OnClose(f func()) { m.onClose = f }

// Status is the response's status code: 0 until the handler writes
// anything, 101 once it hijacked the connection.
func (m *Metered) Status() int { return int(m.status.Load()) }

// BytesIn counts the bytes read from the client: the request body, or for
// a hijacked connection, everything read from it.
func (m *Metered) BytesIn() int64 { return m.in.Load() }

// BytesOut counts the bytes written to the client: the response body, or
// for a hijacked connection, everything written to it.
func (m *Metered) BytesOut() int64 { return m.out.Load() }

// Hijacked reports whether the handler took the connection over.
func (m *Metered) Hijacked() bool { return m.hijacked.Load() }

// Done is closed when the hijacked connection is first closed; it never is
// for a request that is not hijacked.
func (m *Metered) Done() <-chan struct{} { return m.done }

// Duration is the time since Meter, or, once a hijacked connection closed,
// the time it lived.
func (m *Metered) Duration() time.Duration {
	if m.closed.Load() {
		return time.Duration(m.lived.Load())
	}
	return time.Since(m.start)
}

// Fill completes rec with what the meter knows: the bytes and duration, the
// status (200 if the handler wrote nothing) unless rec has one, and the
// method, path (with query), client address, time and kind where rec has
// none. A hijacked request is a session: AuditEnd once its connection
// closed, AuditStart before; its end record's Time is when it ended, other
// records' when the request arrived.
func (m *Metered) Fill(rec api.AuditRecord) api.AuditRecord {
	if rec.Kind == "" {
		rec.Kind = api.AuditRequest
		if m.Hijacked() {
			rec.Kind, rec.Event = api.AuditSession, api.AuditStart
			if m.closed.Load() {
				rec.Event = api.AuditEnd
			}
		}
	}
	if rec.Time.IsZero() {
		rec.Time = m.start
		if rec.Event == api.AuditEnd && m.closed.Load() {
			rec.Time = m.start.Add(time.Duration(m.lived.Load()))
		}
	}
	if rec.Method == "" {
		rec.Method = m.method
	}
	if rec.Path == "" {
		rec.Path = m.path
	}
	if rec.Client == "" {
		rec.Client = m.client
	}
	if rec.Status == 0 {
		rec.Status = m.Status()
		if rec.Status == 0 {
			rec.Status = http.StatusOK
		}
	}
	rec.BytesIn, rec.BytesOut = m.BytesIn(), m.BytesOut()
	rec.DurationMS = float64(m.Duration().Microseconds()) / 1000
	return rec
}

func (m *Metered) setStatus(code int) { m.status.CompareAndSwap(0, int64(code)) }

type meteredBody struct {
	io.ReadCloser
	m *Metered
}

func (b *meteredBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.m.in.Add(int64(n))
	return n, err
}

// meteredWriter embeds the interface, not the concrete writer, so that it
// has only the methods defined here: anything else is reached by
// http.ResponseController through Unwrap.
type meteredWriter struct {
	http.ResponseWriter
	m *Metered
}

func (w *meteredWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *meteredWriter) WriteHeader(code int) {
	// Informational answers (100 Continue, 103 Early Hints) come before
	// the final one.
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.m.setStatus(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *meteredWriter) Write(p []byte) (int, error) {
	w.m.setStatus(http.StatusOK)
	n, err := w.ResponseWriter.Write(p)
	w.m.out.Add(int64(n))
	return n, err
}

func (w *meteredWriter) Flush() { _ = w.FlushError() }

func (w *meteredWriter) FlushError() error {
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hijacks the underlying writer (an error matching
// http.ErrNotSupported where it cannot, as on HTTP/2) and returns a conn
// that keeps counting.
func (w *meteredWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	m := w.m
	m.hijacked.Store(true)
	m.setStatus(http.StatusSwitchingProtocols)
	if n := brw.Writer.Buffered(); n > 0 {
		if err := brw.Writer.Flush(); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("audit: flush before hijack: %w", err)
		}
		m.out.Add(int64(n))
	}
	mc := &meteredConn{Conn: conn, m: m}
	if brw.Reader.Buffered() > 0 {
		mc.br = brw.Reader
	}
	if m.onHijack != nil {
		m.onHijack()
	}
	// Fresh buffers over the counting conn: what the server had read ahead
	// is served, and counted, by mc.Read first.
	return mc, bufio.NewReadWriter(bufio.NewReader(mc), bufio.NewWriter(mc)), nil
}

// meteredConn counts a hijacked connection's bytes until it is closed.
type meteredConn struct {
	net.Conn
	m *Metered

	mu sync.Mutex
	br *bufio.Reader // bytes the server read past the request head; nil once drained
}

func (c *meteredConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.br != nil {
		if k := c.br.Buffered(); k > 0 {
			n, err := c.br.Read(p[:min(len(p), k)])
			c.mu.Unlock()
			c.m.in.Add(int64(n))
			return n, err
		}
		c.br = nil
	}
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.m.in.Add(int64(n))
	return n, err
}

func (c *meteredConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.m.out.Add(int64(n))
	return n, err
}

// CloseWrite half-closes the conn where it can (TCP, TLS): ReverseProxy
// passes the backend's end of stream on this way.
func (c *meteredConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("audit: %T cannot half-close: %w", c.Conn, errors.ErrUnsupported)
}

func (c *meteredConn) Close() error {
	err := c.Conn.Close()
	c.m.closeOnce.Do(func() {
		c.m.lived.Store(int64(time.Since(c.m.start)))
		c.m.closed.Store(true)
		close(c.m.done)
		if c.m.onClose != nil {
			c.m.onClose()
		}
	})
	return err
}

// clientHost is the address's host, without the port.
func clientHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
