package tunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

type writesConn struct {
	net.Conn
	writes [][]byte
}

func (c *writesConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
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
