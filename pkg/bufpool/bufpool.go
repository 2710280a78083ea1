// Package bufpool lends the 32 KiB copy buffers of every proxy on the data
// path (the relay's reverse proxies, kube-aad-proxy's, the agent's stream
// pipes), so that a request or a stream does not allocate, and the garbage
// collector does not clear, a fresh one.
package bufpool

import (
	"io"
	"sync"
)

// Size is the length of every buffer: io.Copy's and httputil.ReverseProxy's
// own.
const Size = 32 << 10

var pool = sync.Pool{New: func() any { b := make([]byte, Size); return &b }}

// Pool is an httputil.BufferPool over the shared buffers.
type Pool struct{}

// Get lends a buffer of Size bytes.
func (Pool) Get() []byte { return *(pool.Get().(*[]byte)) }

// Put returns a buffer from Get; one of another size is dropped.
func (Pool) Put(b []byte) {
	if cap(b) != Size {
		return
	}
	b = b[:Size]
	pool.Put(&b)
}

// Large is the buffer Copy moves to while the data keeps coming: a bulk
// transfer (a large response, a log or watch burst) then costs a quarter of
// the reads, writes and tunnel frames (docs/performance.md).
const Large = 128 << 10

var largePool = sync.Pool{New: func() any { b := make([]byte, Large); return &b }}

// Copy is io.Copy through a lent Size buffer. Unlike io.CopyBuffer it
// always uses that buffer: dst's ReadFrom and src's WriteTo are bypassed,
// since on sockets and TLS connections they fall back to allocating one of
// their own.
func Copy(dst io.Writer, src io.Reader) (int64, error) {
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	return io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *bp)
}

// CopyBulk is Copy that reads into a Size buffer and, after a read that
// filled it, into a Large one, until a read comes back shorter than Size:
// an idle or trickling stream holds one small buffer, a bulk one reads in
// large pieces. The agent copies its upstream's answers into the tunnel
// with it.
func CopyBulk(dst io.Writer, src io.Reader) (written int64, err error) {
	small := pool.Get().(*[]byte)
	defer pool.Put(small)
	var large *[]byte
	defer func() {
		if large != nil {
			largePool.Put(large)
		}
	}()
	for {
		buf := *small
		if large != nil {
			buf = *large
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			m, werr := dst.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
			if m != n {
				return written, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
		switch {
		case large == nil && n == Size:
			large = largePool.Get().(*[]byte)
		case large != nil && n < Size:
			largePool.Put(large)
			large = nil
		}
	}
}

type writerOnly struct{ io.Writer }

type readerOnly struct{ io.Reader }
