package tunnel

import (
	"encoding/binary"
	"io"
	"net/http"
	"sync"
)

// maxBatch is the most a frameBatcher holds before it writes, so a large
// frame goes out in pieces of this size rather than pinning a buffer its size.
// 64 KiB is four full TLS records per write system call.
const maxBatch = 64 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, maxBatch); return &b }}

// batchWebSocketWrites wraps rt, the RoundTripper that carries a WebSocket
// client's upgrade request, so that the client's writes on the upgraded
// connection reach the network one whole WebSocket frame at a time.
//
// Why: coder/websocket's client masks a message through a fixed 4 KiB
// bufio.Writer and flushes it each time it fills, so a 32 KiB message costs
// nine writes to the TLS connection — nine TLS records and nine system calls.
// The agent is the WebSocket client and responses flow agent → relay, so this
// is the hot direction. The batcher sits between the WebSocket library and the
// TLS connection, follows the frame headers it is given, and holds a frame's
// bytes until the frame is complete (or maxBatch is reached), so the same
// message costs one write. Nothing else changes: bytes and their order are the
// same, and a frame is never held after its last byte arrives.
//
// Pass the result as websocket.DialOptions.HTTPClient's Transport. A response
// other than 101 Switching Protocols, or a body that cannot be written, is
// returned as it is.
func batchWebSocketWrites(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return batchRoundTripper{rt}
}

type batchRoundTripper struct{ rt http.RoundTripper }

func (b batchRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := b.rt.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		return resp, err
	}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
		resp.Body = newFrameBatcher(rwc)
	}
	return resp, nil
}

// frameBatcher buffers writes to rwc up to the end of each WebSocket frame
// (RFC 6455 §5.2). It reads nothing but the frame headers' lengths; reads pass
// through untouched.
type frameBatcher struct {
	io.ReadWriteCloser

	mu   sync.Mutex
	buf  *[]byte  // pending bytes of the current frame; nil when none
	hdr  [14]byte // the current frame's header so far
	nhdr int      // bytes of hdr seen; 0 between frames
	rest uint64   // payload bytes of the current frame still to come
	body bool     // the header is complete; rest counts the payload
}

func newFrameBatcher(rwc io.ReadWriteCloser) *frameBatcher {
	return &frameBatcher{ReadWriteCloser: rwc}
}

// headerLen is the length of a frame header whose first two bytes are b0, b1.
func headerLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4 // masking key
	}
	return n
}

// payloadLen reads the payload length from a complete header.
func payloadLen(h []byte) uint64 {
	switch l := h[1] & 0x7f; l {
	case 126:
		return uint64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		return binary.BigEndian.Uint64(h[2:])
	default:
		return uint64(l)
	}
}

// Write takes any split of the frame stream: a frame across many calls, or
// many frames in one call. It reports len(p) once the bytes are either sent
// or held for the rest of their frame.
func (f *frameBatcher) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	total := len(p)
	for len(p) > 0 {
		if f.buf == nil {
			f.buf = batchPool.Get().(*[]byte)
		}
		if !f.body {
			// Header bytes: collect until its length is known and reached.
			need := 2
			if f.nhdr >= 2 {
				need = headerLen(f.hdr[1])
			}
			n := copy(f.hdr[f.nhdr:need], p)
			f.nhdr += n
			*f.buf = append(*f.buf, p[:n]...)
			p = p[n:]
			if f.nhdr < 2 || f.nhdr < headerLen(f.hdr[1]) {
				continue
			}
			f.body, f.rest = true, payloadLen(f.hdr[:f.nhdr])
		}
		n := min(uint64(len(p)), f.rest, uint64(maxBatch-len(*f.buf)))
		*f.buf = append(*f.buf, p[:n]...)
		p = p[n:]
		f.rest -= n
		if f.rest == 0 {
			f.body, f.nhdr = false, 0
			if err := f.flush(); err != nil {
				return 0, err
			}
		} else if len(*f.buf) >= maxBatch {
			if err := f.flush(); err != nil {
				return 0, err
			}
		}
	}
	return total, nil
}

// flush writes the pending bytes and returns the buffer to the pool, so an
// idle tunnel holds none.
func (f *frameBatcher) flush() error {
	b := f.buf
	f.buf = nil
	_, err := f.ReadWriteCloser.Write(*b)
	*b = (*b)[:0]
	batchPool.Put(b)
	return err
}
