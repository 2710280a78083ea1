package bufpool

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

var copies = map[string]func(io.Writer, io.Reader) (int64, error){"Copy": Copy, "CopyBulk": CopyBulk}

func TestCopyMovesEverything(t *testing.T) {
	src := bytes.Repeat([]byte("0123456789abcdef"), 50000) // 800 000 bytes: several buffers of each size
	for name, copy := range copies {
		var dst bytes.Buffer
		n, err := copy(&dst, bytes.NewReader(src))
		if err != nil || n != int64(len(src)) || !bytes.Equal(dst.Bytes(), src) {
			t.Fatalf("%s = %d, %v; copied equal: %v", name, n, err, bytes.Equal(dst.Bytes(), src))
		}
	}
}

// TestCopyBypassesReadFromAndWriteTo: sockets' ReadFrom and WriteTo
// allocate a 32 KiB buffer per copy; Copy must use the lent one instead.
func TestCopyBypassesReadFromAndWriteTo(t *testing.T) {
	for name, copy := range copies {
		var dst fromWriter
		n, err := copy(&dst, toReader{bytes.NewReader([]byte("hello"))})
		if err != nil || n != 5 || dst.String() != "hello" {
			t.Fatalf("%s = %d, %v, %q", name, n, err, dst.String())
		}
		if dst.readFrom {
			t.Fatalf("%s called dst.ReadFrom", name)
		}
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

// CopyBulk reads in Large pieces while reads fill its buffer, and goes back
// to Size ones after a short read.
func TestCopyBulkGrowsWhileDataKeepsComing(t *testing.T) {
	// Reads: three full, one short, one full, then EOF.
	src := &scriptedReader{fill: []bool{true, true, true, false, true}}
	n, err := CopyBulk(io.Discard, src)
	if err != nil {
		t.Fatal(err)
	}
	want := []int{Size, Large, Large, Large, Size, Large}
	if fmt.Sprint(src.sizes) != fmt.Sprint(want) {
		t.Fatalf("read sizes %v, want %v", src.sizes, want)
	}
	if n != src.total {
		t.Fatalf("copied %d of %d bytes", n, src.total)
	}
}

// scriptedReader fills each Read's buffer (or gives 10 bytes) as told, and
// records the buffer sizes it was given; after the script, EOF.
type scriptedReader struct {
	fill  []bool
	sizes []int
	total int64
}

func (r *scriptedReader) Read(p []byte) (int, error) {
	r.sizes = append(r.sizes, len(p))
	if len(r.fill) == 0 {
		return 0, io.EOF
	}
	n := 10
	if r.fill[0] {
		n = len(p)
	}
	r.fill = r.fill[1:]
	r.total += int64(n)
	return n, nil
}

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
