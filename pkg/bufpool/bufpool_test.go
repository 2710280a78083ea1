package bufpool

import (
	"bytes"
	"io"
	"testing"
)

func TestCopyMovesEverything(t *testing.T) {
	src := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80 000 bytes: several buffers
	var dst bytes.Buffer
	n, err := Copy(&dst, bytes.NewReader(src))
	if err != nil || n != int64(len(src)) || !bytes.Equal(dst.Bytes(), src) {
		t.Fatalf("Copy = %d, %v; copied equal: %v", n, err, bytes.Equal(dst.Bytes(), src))
	}
}

// TestCopyBypassesReadFromAndWriteTo: sockets' ReadFrom and WriteTo
// allocate a 32 KiB buffer per copy; Copy must use the lent one instead.
func TestCopyBypassesReadFromAndWriteTo(t *testing.T) {
	var dst fromWriter
	n, err := Copy(&dst, toReader{bytes.NewReader([]byte("hello"))})
	if err != nil || n != 5 || dst.String() != "hello" {
		t.Fatalf("Copy = %d, %v, %q", n, err, dst.String())
	}
	if dst.readFrom {
		t.Fatal("Copy called dst.ReadFrom")
	}
}

type fromWriter struct {
	bytes.Buffer
	readFrom bool
}

func (w *fromWriter) ReadFrom(r io.Reader) (int64, error) {
	w.readFrom = true
	return w.Buffer.ReadFrom(r)
}

type toReader struct{ r *bytes.Reader }

func (r toReader) Read(p []byte) (int, error) { return r.r.Read(p) }

func (r toReader) WriteTo(io.Writer) (int64, error) { panic("Copy called src.WriteTo") }

func TestPoolGivesFullBuffersAndDropsOthers(t *testing.T) {
	var p Pool
	b := p.Get()
	if len(b) != Size {
		t.Fatalf("Get returned %d bytes, want %d", len(b), Size)
	}
	p.Put(b[:10]) // a shortened buffer still has the capacity: kept, restored
	if got := p.Get(); len(got) != Size {
		t.Fatalf("after Put of a shortened buffer, Get returned %d bytes", len(got))
	}
	p.Put(make([]byte, 100)) // another size: dropped
	for range 3 {
		if got := p.Get(); len(got) != Size {
			t.Fatalf("Get returned %d bytes after a foreign Put", len(got))
		}
	}
}
