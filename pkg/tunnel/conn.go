package tunnel

import (
	"encoding/binary"
	"net"
)

// yamux frame header layout (yamux spec.md): version(1) type(1) flags(2)
// streamID(4) length(4).
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

// wsConn sits between yamux and the WebSocket net.Conn. yamux writes a data
// frame as two calls, the 12-byte header and then the body; over a WebSocket
// each call would become a message of its own (a frame header, a mask and a
// flush each). wsConn holds a data frame's header back and sends it with its
// body as one message. It also counts bytes for the metrics.
//
// yamux writes from a single goroutine (its send loop), so Write needs no lock.
type wsConn struct {
	net.Conn
	m       *Metrics
	pending []byte // a held-back data header followed by room for its body
	held    bool
}

func newWSConn(c net.Conn, m *Metrics) *wsConn {
	return &wsConn{Conn: c, m: m, pending: make([]byte, 0, 64<<10)}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if !c.held && len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		c.pending = append(c.pending[:0], p...)
		c.held = true
		return len(p), nil
	}
	if c.held {
		c.held = false
		c.pending = append(c.pending, p...)
		n, err := c.Conn.Write(c.pending)
		if c.m != nil {
			c.m.BytesTx.Add(float64(n))
		}
		if cap(c.pending) > 1<<20 {
			c.pending = make([]byte, 0, 64<<10) // do not pin a rare huge frame
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
	if c.m != nil && n > 0 {
		c.m.BytesRx.Add(float64(n))
	}
	return n, err
}
