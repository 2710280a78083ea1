package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// appendFrame appends a binary WebSocket frame with an n-byte payload.
func appendFrame(b []byte, n int, masked bool) []byte {
	var mask byte
	if masked {
		mask = 0x80
	}
	b = append(b, 0x82)
	switch {
	case n < 126:
		b = append(b, mask|byte(n))
	case n <= 0xffff:
		b = append(b, mask|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, mask|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if masked {
		b = append(b, 1, 2, 3, 4)
	}
	payload := make([]byte, n)
	rand.Read(payload)
	return append(b, payload...)
}

type recorder struct {
	bytes.Buffer
	writes []int
}

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, len(p))
	return r.Buffer.Write(p)
}
func (r *recorder) Read([]byte) (int, error) { return 0, io.EOF }
func (r *recorder) Close() error             { return nil }

// The batcher sends each frame in one write (or in maxBatch pieces when it
// is larger), whatever split of the byte stream it is given.
func TestFrameBatcherWritesWholeFrames(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 4000, 32 << 10, 0xffff, 0x10000, maxBatch - 14, 200 << 10, 7}
	for _, masked := range []bool{true, false} {
		var stream []byte
		var ends []int // offset just past each frame
		for _, n := range sizes {
			stream = appendFrame(stream, n, masked)
			ends = append(ends, len(stream))
		}
		for _, split := range []int{1, 3, 4096, 5000, 1 << 20} {
			rec := &recorder{}
			f := newFrameBatcher(rec)
			for p := stream; len(p) > 0; {
				n := min(len(p), split)
				if split == 5000 {
					n = min(len(p), 1+mrand.IntN(9000))
				}
				if got, err := f.Write(p[:n]); err != nil || got != n {
					t.Fatalf("Write(%d) = %d, %v", n, got, err)
				}
				p = p[n:]
			}
			if !bytes.Equal(rec.Bytes(), stream) {
				t.Fatalf("masked=%v split=%d: bytes differ", masked, split)
			}
			// Every write ends on a frame boundary or is a full maxBatch piece.
			off, e := 0, 0
			for _, w := range rec.writes {
				off += w
				for e < len(ends) && ends[e] < off {
					e++
				}
				if !(e < len(ends) && ends[e] == off) && w != maxBatch {
					t.Fatalf("masked=%v split=%d: a write of %d bytes ends at %d, inside a frame", masked, split, w, off)
				}
			}
			want := 0
			prev := 0
			for _, end := range ends {
				want += (end - prev + maxBatch - 1) / maxBatch
				prev = end
			}
			if len(rec.writes) > want {
				t.Fatalf("masked=%v split=%d: %d writes, want at most %d", masked, split, len(rec.writes), want)
			}
			if f.buf != nil {
				t.Fatalf("a buffer is held between frames")
			}
		}
	}
}

// countConn counts the writes that reach the network.
type countConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// wsPair connects a coder/websocket client to a server over TCP, or TLS when
// tls is true, with the client's writes batched or not; it returns both ends
// and the client's count of network writes.
func wsPair(t *testing.T, useTLS, batch bool) (client, server *websocket.Conn, writes *atomic.Int64) {
	t.Helper()
	accepted := make(chan *websocket.Conn, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		c.SetReadLimit(-1)
		accepted <- c
	}))
	srv.EnableHTTP2 = false
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	writes = &atomic.Int64{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countConn{c, writes}, nil
		},
	}
	if useTLS {
		tr.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
	}
	var rt http.RoundTripper = tr
	if batch {
		rt = batchWebSocketWrites(tr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	client.SetReadLimit(-1)
	server = <-accepted
	t.Cleanup(func() {
		client.CloseNow()
		server.CloseNow()
		tr.CloseIdleConnections()
	})
	return client, server, writes
}

// Over TCP and TLS, a batched client's messages arrive intact, control
// frames (ping, close) are not held back, and a 32 KiB message is one network
// write instead of one per 4 KiB.
func TestBatchWebSocketWrites(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := map[bool]string{false: "tcp", true: "tls"}[useTLS]
		t.Run(name, func(t *testing.T) {
			client, server, writes := wsPair(t, useTLS, true)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			go func() {
				for {
					typ, b, err := server.Read(ctx)
					if err != nil {
						return
					}
					if server.Write(ctx, typ, b) != nil {
						return
					}
				}
			}()
			for _, n := range []int{0, 1, 125, 126, 32 << 10, 0x10000, 300 << 10} {
				msg := make([]byte, n)
				rand.Read(msg)
				before := writes.Load()
				if err := client.Write(ctx, websocket.MessageBinary, msg); err != nil {
					t.Fatal(err)
				}
				sent := writes.Load() - before
				if want := int64(1 + (n+14)/maxBatch); !useTLS && sent > want {
					t.Errorf("a %d-byte message took %d writes, want at most %d", n, sent, want)
				}
				_, got, err := client.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("%d-byte message came back different", n)
				}
			}
			// A ping needs the server's pong, which needs the ping on the wire
			// (CloseRead keeps reading the client's side, for the pong).
			client.CloseRead(ctx)
			if err := client.Ping(ctx); err != nil {
				t.Fatalf("ping through the batcher: %v", err)
			}
			if err := client.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatalf("close handshake through the batcher: %v", err)
			}
		})
	}
}

// Without the batcher the same 32 KiB message takes one write per 4 KiB:
// this pins the reason the batcher exists, so a library upgrade that fixes it
// shows here.
func TestUnbatchedClientWritesPer4KiB(t *testing.T) {
	client, server, writes := wsPair(t, false, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { _, _, _ = server.Read(ctx) }()
	before := writes.Load()
	if err := client.Write(ctx, websocket.MessageBinary, make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	if n := writes.Load() - before; n < 8 {
		t.Logf("coder/websocket now sends a 32 KiB client message in %d writes; BatchWebSocketWrites may no longer be needed", n)
	}
}

// BenchmarkClientWrite is one 32 KiB binary message from a coder/websocket
// client over TLS loopback, batched and not.
func BenchmarkClientWrite(b *testing.B) {
	for _, batch := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "batched"}[batch], func(b *testing.B) {
			client, server := wsPairB(b, batch)
			ctx := context.Background()
			go func() {
				for {
					_, r, err := server.Reader(ctx)
					if err != nil {
						return
					}
					io.Copy(io.Discard, r)
				}
			}()
			msg := make([]byte, 32<<10)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := client.Write(ctx, websocket.MessageBinary, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// wsPairB is wsPair for benchmarks (TLS only).
func wsPairB(b *testing.B, batch bool) (client, server *websocket.Conn) {
	accepted := make(chan *websocket.Conn, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		accepted <- c
	}))
	srv.EnableHTTP2 = false
	srv.StartTLS()
	b.Cleanup(srv.Close)
	tr := &http.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	var rt http.RoundTripper = tr
	if batch {
		rt = batchWebSocketWrites(tr)
	}
	client, _, err := websocket.Dial(context.Background(), "wss"+strings.TrimPrefix(srv.URL, "https"), &websocket.DialOptions{HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		b.Fatal(err)
	}
	server = <-accepted
	b.Cleanup(func() { client.CloseNow(); server.CloseNow(); tr.CloseIdleConnections() })
	return client, server
}
