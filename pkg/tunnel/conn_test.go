package tunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

type writesConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *writesConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *writesConn) Close() error { return nil }

func (c *writesConn) taken() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

func withFlags(h []byte, flags uint16) []byte {
	binary.BigEndian.PutUint16(h[2:], flags)
	return h
}

func yamuxHeader(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[4:], 1)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// A data frame's header and body leave as one write (one WebSocket message);
// other frames pass through as they are; sizes past the pooled buffer work.
func TestWSConnJoinsDataHeaderAndBody(t *testing.T) {
	under := &writesConn{}
	c := newWSConn(under, nil)
	for _, n := range []int{1, 32 << 10, 64 << 10, 3 << 20} {
		under.writes = nil
		body := bytes.Repeat([]byte{byte(n)}, n)
		hdr := yamuxHeader(yamuxTypeData, uint32(n))
		if got, err := c.Write(hdr); err != nil || got != len(hdr) {
			t.Fatalf("header: %d, %v", got, err)
		}
		if len(under.writes) != 0 {
			t.Fatal("the data header was sent before its body")
		}
		if got, err := c.Write(body); err != nil || got != n {
			t.Fatalf("body: %d, %v", got, err)
		}
		if len(under.writes) != 1 || !bytes.Equal(under.writes[0], append(hdr, body...)) {
			t.Fatalf("%d-byte frame: %d writes, want one holding header and body", n, len(under.writes))
		}
	}
	// A window update (type 1) and an empty data frame (a FIN) go out alone.
	under.writes = nil
	for _, h := range [][]byte{yamuxHeader(1, 1<<20), yamuxHeader(yamuxTypeData, 0)} {
		c.Write(h)
	}
	if len(under.writes) != 2 {
		t.Fatalf("control frames: %d writes, want 2", len(under.writes))
	}
}

// A stream's opening frames (SYN, ACK) travel with the next write: the
// relay's request header, the agent's reply. Frames that also close, and
// everything else, are not held; a held frame goes out alone after
// holdDelay when nothing follows.
func TestWSConnSendsOpeningFramesWithTheNextWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		under := &writesConn{}
		c := newWSConn(under, nil)
		defer c.Close()
		syn := withFlags(yamuxHeader(yamuxTypeWindowUpdate, 0), yamuxFlagSYN)
		hdr, body := yamuxHeader(yamuxTypeData, 5), []byte("hello")
		for _, p := range [][]byte{syn, hdr, body} {
			c.Write(p)
		}
		if w := under.taken(); len(w) != 1 || !bytes.Equal(w[0], slices.Concat(syn, hdr, body)) {
			t.Fatalf("SYN, data header, body: %d writes, want one with all three", len(w))
		}

		ack := withFlags(yamuxHeader(yamuxTypeWindowUpdate, 0), yamuxFlagACK)
		ping := yamuxHeader(2, 7)
		c.Write(ack)
		c.Write(ping)
		if w := under.taken(); len(w) != 1 || !bytes.Equal(w[0], slices.Concat(ack, ping)) {
			t.Fatalf("ACK, ping: %d writes, want one with both", len(w))
		}

		for _, h := range [][]byte{
			withFlags(yamuxHeader(yamuxTypeWindowUpdate, 0), yamuxFlagSYN|yamuxFlagFIN),
			withFlags(yamuxHeader(yamuxTypeWindowUpdate, 0), yamuxFlagACK|yamuxFlagRST),
			yamuxHeader(yamuxTypeWindowUpdate, 1<<20),
		} {
			c.Write(h)
			if w := under.taken(); len(w) != 1 {
				t.Fatalf("flags %#x: %d writes, want it sent at once", binary.BigEndian.Uint16(h[2:]), len(w))
			}
		}

		// A 12-byte body that looks like a data header is sent, not held.
		lookalike := yamuxHeader(yamuxTypeData, 7)
		c.Write(yamuxHeader(yamuxTypeData, 12))
		c.Write(lookalike)
		if w := under.taken(); len(w) != 1 || !bytes.Equal(w[0], slices.Concat(yamuxHeader(yamuxTypeData, 12), lookalike)) {
			t.Fatalf("data header + a 12-byte body shaped like a header: %d writes, want one with both", len(w))
		}

		c.Write(syn)
		synctest.Wait()
		if w := under.taken(); len(w) != 0 {
			t.Fatal("a lone SYN went out before holdDelay")
		}
		time.Sleep(holdDelay)
		synctest.Wait()
		if w := under.taken(); len(w) != 1 || !bytes.Equal(w[0], syn) {
			t.Fatalf("a lone SYN after holdDelay: %d writes, want it alone", len(w))
		}
	})
}

func BenchmarkWSConnDataFrame(b *testing.B) {
	c := newWSConn(&writesConn{}, nil)
	under := c.Conn.(*writesConn)
	hdr := yamuxHeader(yamuxTypeData, 32<<10)
	body := make([]byte, 32<<10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for range b.N {
		under.writes = under.writes[:0]
		c.Write(hdr)
		c.Write(body)
	}
}
