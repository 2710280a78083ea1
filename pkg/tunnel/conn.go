package tunnel

import (
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// yamux frame header layout (yamux spec.md): version(1) type(1) flags(2)
// streamID(4) length(4).
const (
	yamuxHeaderSize       = 12
	yamuxTypeData         = 0
	yamuxTypeWindowUpdate = 1
	yamuxTypeGoAway       = 3
	yamuxGoAwayNorm       = 0 // go-away code of a normal drain

	yamuxFlagSYN = 1
	yamuxFlagACK = 2
	yamuxFlagFIN = 4
	yamuxFlagRST = 8
)

// wsConn sits between yamux and the WebSocket net.Conn. yamux writes a data
// frame as two calls, the 12-byte header and then the body; over a WebSocket
// each call would become a message of its own (a frame header, a mask and a
// flush each). wsConn holds a data frame's header back and sends it with its
// body as one message. It holds a stream's opening frames the same way — the
// opener's SYN and the acceptor's ACK, window updates without a body — and
// sends them with the next write, which on the relay is the stream's request
// header and on the agent its reply: a stream opens in two messages, not
// four. A held header goes out on its own after holdDelay if no write
// follows. It also counts bytes for the metrics.
//
// The buffer that joins header and body comes from a pool and goes back after
// each message, so an idle tunnel holds none (it was 64 KiB per tunnel, on
// each side, when every wsConn kept its own).
//
// yamux writes from a single goroutine (its send loop); mu orders those
// writes with the flush of held headers from a timer.
type wsConn struct {
	net.Conn
	m *Metrics

	mu    sync.Mutex
	held  [3 * yamuxHeaderSize]byte // headers held back, in order
	nheld int
	// bodyNext: the last write was a data frame's header, so the next is
	// its body (yamux writes it in one call).
	bodyNext bool
	flush    *time.Timer // sends held opening frames after holdDelay; nil until first needed

	// onClose runs once when yamux closes the connection, which it does on
	// every way a session ends; it replaces a goroutine per session waiting
	// for the end.
	onClose   func()
	closeOnce sync.Once

	// The read side follows the frame headers yamux receives, only to see
	// the peer's go-away (yamux keeps it to itself) and call onGoAway.
	// yamux reads from a single goroutine (its receive loop).
	onGoAway func()
	rhdr     [yamuxHeaderSize]byte
	rn       int    // bytes of rhdr seen
	rskip    uint64 // data frame body bytes still to pass
}

// holdDelay bounds how long a stream's opening frame waits for a write to
// travel with. The relay writes the request header at once; the agent
// replies once its upstream dial is done, which on a real network may take
// longer than this, and the ACK then goes out alone, as it used to.
const holdDelay = time.Millisecond

func (c *wsConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	if c.flush != nil {
		c.flush.Stop()
	}
	c.mu.Unlock()
	if c.onClose != nil {
		c.closeOnce.Do(c.onClose)
	}
	return err
}

// maxPooledFrame is the largest joined message whose buffer is pooled; yamux
// sends at most a window's worth in one frame, and a rare huge one should not
// stay pinned in the pool.
const maxPooledFrame = 1 << 20

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10+yamuxHeaderSize); return &b }}

func newWSConn(c net.Conn, m *Metrics) *wsConn {
	return &wsConn{Conn: c, m: m}
}

// holdable reports whether p is a header wsConn may hold: a data frame's,
// whose body follows at once, or a stream's SYN or ACK without FIN or RST.
func holdable(p []byte) (ok, opening bool) {
	if len(p) != yamuxHeaderSize {
		return false, false
	}
	switch flags := binary.BigEndian.Uint16(p[2:]); p[1] {
	case yamuxTypeData:
		return binary.BigEndian.Uint32(p[8:]) > 0, false
	case yamuxTypeWindowUpdate:
		open := flags&(yamuxFlagSYN|yamuxFlagACK) != 0 && flags&(yamuxFlagFIN|yamuxFlagRST) == 0
		return open, open
	}
	return false, false
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// After a data header comes its body, in one write: whatever its bytes
	// look like, it is never a header to hold.
	body := c.bodyNext
	ok, opening := false, false
	if !body {
		ok, opening = holdable(p)
	}
	c.bodyNext = ok && !opening // a data header: its body is next
	if ok && c.nheld+len(p) <= len(c.held) {
		c.nheld += copy(c.held[c.nheld:], p)
		if opening {
			if c.flush == nil {
				c.flush = time.AfterFunc(holdDelay, c.flushHeld)
			} else {
				c.flush.Reset(holdDelay)
			}
		}
		return len(p), nil
	}
	if c.nheld == 0 {
		n, err := c.Conn.Write(p)
		c.count(n)
		return n, err
	}
	bp := framePool.Get().(*[]byte)
	msg := append(append((*bp)[:0], c.held[:c.nheld]...), p...)
	c.nheld = 0
	if c.flush != nil {
		c.flush.Stop()
	}
	n, err := c.Conn.Write(msg)
	if cap(msg) <= maxPooledFrame {
		*bp = msg[:0]
		framePool.Put(bp)
	}
	c.count(n)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// flushHeld sends what is held when no write came within holdDelay.
func (c *wsConn) flushHeld() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nheld == 0 {
		return
	}
	n, err := c.Conn.Write(c.held[:c.nheld])
	c.count(n)
	c.nheld = 0
	if err != nil {
		c.Conn.Close() // yamux's next write fails and ends the session
	}
}

func (c *wsConn) count(n int) {
	if c.m != nil {
		c.m.BytesTx.Add(float64(n))
	}
}

func (c *wsConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		if c.m != nil {
			c.m.BytesRx.Add(float64(n))
		}
		c.scan(p[:n])
	}
	return n, err
}

// scan follows the frames in bytes yamux has read: headers are looked at,
// data bodies skipped.
func (c *wsConn) scan(p []byte) {
	for len(p) > 0 {
		if c.rskip > 0 {
			k := min(uint64(len(p)), c.rskip)
			p, c.rskip = p[k:], c.rskip-k
			continue
		}
		k := copy(c.rhdr[c.rn:], p)
		c.rn += k
		p = p[k:]
		if c.rn < yamuxHeaderSize {
			return
		}
		c.rn = 0
		length := binary.BigEndian.Uint32(c.rhdr[8:])
		switch c.rhdr[1] {
		case yamuxTypeData:
			c.rskip = uint64(length)
		case yamuxTypeGoAway:
			if length == yamuxGoAwayNorm && c.onGoAway != nil {
				c.onGoAway()
			}
		}
	}
}
