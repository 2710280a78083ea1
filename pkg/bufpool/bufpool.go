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

// Copy is io.Copy through a lent buffer. Unlike io.CopyBuffer it always
// uses that buffer: dst's ReadFrom and src's WriteTo are bypassed, since on
// sockets and TLS connections they fall back to allocating one of their own.
func Copy(dst io.Writer, src io.Reader) (int64, error) {
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	return io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *bp)
}

type writerOnly struct{ io.Writer }

type readerOnly struct{ io.Reader }
