package tunnel

import (
	"encoding/binary"
	"net"
	"sync"
)

// yamux frame header layout (yamux spec.md): version(1) type(1) flags(2)
// streamID(4) length(4).
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	yamuxTypeGoAway = 3
	yamuxGoAwayNorm = 0 // go-away code of a normal drain
)

// wsConn sits between yamux and the WebSocket net.Conn. yamux writes a data
// frame as two calls, the 12-byte header and then the body; over a WebSocket
// each call would become a message of its own (a frame header, a mask and a
// flush each). wsConn holds a data frame's header back and sends it with its
// body as one message. It also counts bytes for the metrics.
//
// The buffer that joins header and body comes from a pool and goes back after
// each message, so an idle tunnel holds none (it was 64 KiB per tunnel, on
// each side, when every wsConn kept its own).
//
// yamux writes from a single goroutine (its send loop), so Write needs no lock.
type wsConn struct {
	net.Conn
	m    *Metrics
	hdr  [yamuxHeaderSize]byte // a held-back data header
	held bool

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

func (c *wsConn) Close() error {
	err := c.Conn.Close()
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

func (c *wsConn) Write(p []byte) (int, error) {
	if !c.held && len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	if c.held {
		c.held = false
		bp := framePool.Get().(*[]byte)
		msg := append(append((*bp)[:0], c.hdr[:]...), p...)
		n, err := c.Conn.Write(msg)
		if cap(msg) <= maxPooledFrame {
			*bp = msg[:0]
			framePool.Put(bp)
		}
		if c.m != nil {
			c.m.BytesTx.Add(float64(n))
		}
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	if c.m != nil {
		c.m.BytesTx.Add(float64(n))
	}
	return n, err
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
