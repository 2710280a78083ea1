package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

// The Benchmark functions measure the same paths as TestReport, one figure
// at a time, for benchstat; `make bench-smoke` runs each once.

var shared struct {
	once sync.Once
	p    *pki
	u    *upstreams
	err  error
}

func setup(b *testing.B) (*pki, *upstreams) {
	shared.once.Do(func() {
		shared.p, shared.err = newPKI()
		if shared.err == nil {
			shared.u, shared.err = startUpstreams(shared.p.cert)
		}
	})
	if shared.err != nil {
		b.Fatal(shared.err)
	}
	return shared.p, shared.u
}

type streamCase struct {
	name string
	mk   func(u *upstreams, p *pki) (*streamPath, error)
}

func streamCases() []streamCase {
	return []streamCase{
		{"direct-tcp", func(u *upstreams, _ *pki) (*streamPath, error) { return directTCP(u), nil }},
		{"direct-tls", func(u *upstreams, p *pki) (*streamPath, error) { return directTLS(u, p), nil }},
		{"tunnel", func(u *upstreams, p *pki) (*streamPath, error) {
			return tunnelAlone("tunnel", "", u, p, agentDial, nil)
		}},
		{"tunnel-batched", func(u *upstreams, p *pki) (*streamPath, error) {
			return tunnelAlone("tunnel-batched", "", u, p, agentBatched, nil)
		}},
		{"tunnel-gorilla", func(u *upstreams, p *pki) (*streamPath, error) {
			return tunnelAlone("tunnel-gorilla", "", u, p, agentGorilla, nil)
		}},
		{"remotedialer", remotedialerAlone},
	}
}

// benchStream moves 32 KiB per op over one open stream: "up" to the sink,
// "down" from the source.
func benchStream(b *testing.B, sp *streamPath, dir string) {
	c, err := sp.open(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	op := map[string]byte{"up": opSink, "down": opSource}[dir]
	var hdr [9]byte
	hdr[0] = op
	binary.BigEndian.PutUint64(hdr[1:], 1<<50)
	if _, err := c.Write(hdr[:]); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if op == opSink {
			_, err = c.Write(buf)
		} else {
			_, err = io.ReadFull(c, buf)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

// BenchmarkStream: one stream's throughput per contender and direction.
func BenchmarkStream(b *testing.B) {
	for _, sc := range streamCases() {
		for _, dir := range []string{"up", "down"} {
			b.Run(sc.name+"/"+dir, func(b *testing.B) {
				p, u := setup(b)
				sp, err := sc.mk(u, p)
				if err != nil {
					b.Fatal(err)
				}
				defer sp.close()
				benchStream(b, sp, dir)
			})
		}
	}
}

// BenchmarkStreamRTT: a 1-byte echo on an open stream.
func BenchmarkStreamRTT(b *testing.B) {
	for _, sc := range streamCases() {
		b.Run(sc.name, func(b *testing.B) {
			p, u := setup(b)
			sp, err := sc.mk(u, p)
			if err != nil {
				b.Fatal(err)
			}
			defer sp.close()
			c, err := sp.open(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			one := []byte{opEcho}
			if _, err := c.Write(one); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(one); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, one); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStreamOpen: open a stream, echo a byte, close.
func BenchmarkStreamOpen(b *testing.B) {
	for _, sc := range streamCases() {
		b.Run(sc.name, func(b *testing.B) {
			p, u := setup(b)
			sp, err := sc.mk(u, p)
			if err != nil {
				b.Fatal(err)
			}
			defer sp.close()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c, err := sp.open(ctx)
				if err != nil {
					b.Fatal(err)
				}
				msg := []byte{opEcho, 1}
				if _, err := c.Write(msg); err == nil {
					_, err = io.ReadFull(c, msg[:1])
				}
				c.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type httpCase struct {
	name string
	mk   func(u *upstreams, p *pki) (*httpPath, error)
}

func httpCases() []httpCase {
	return []httpCase{
		{"direct-https", func(u *upstreams, p *pki) (*httpPath, error) { return directHTTPS(u, p), nil }},
		{"full", func(u *upstreams, p *pki) (*httpPath, error) {
			return fullPath("full", "", u, p, agentDial, nil)
		}},
		{"full-batched", func(u *upstreams, p *pki) (*httpPath, error) {
			return fullPath("full-batched", "", u, p, agentBatched, tunedConfig)
		}},
		{"remotedialer", remotedialerFull},
	}
}

// BenchmarkHTTP: whole GETs through each HTTP-level path.
func BenchmarkHTTP(b *testing.B) {
	for _, hc := range httpCases() {
		for _, get := range []struct{ name, path string }{{"1B", "/bytes?n=1"}, {"1KiB", "/bytes?n=1024"}, {"list-1MiB", "/list"}, {"32MiB", "/bytes?n=33554432"}} {
			b.Run(hc.name+"/"+get.name, func(b *testing.B) {
				p, u := setup(b)
				hp, err := hc.mk(u, p)
				if err != nil {
					b.Fatal(err)
				}
				defer hp.close()
				ctx := context.Background()
				if _, err := httpLatency(ctx, hp, get.path, 1); err != nil { // warm the connection
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if _, err := httpLatency(ctx, hp, get.path, 1); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkTunnelStream moves bytes over one stream of the tunnel library as
// shipped (tunnel.Dial's agent), relay→agent ("up": request bodies) and
// agent→relay ("down": responses), per stream window.
func BenchmarkTunnelStream(b *testing.B) {
	for _, window := range []uint32{256 << 10, 1 << 20, 4 << 20, 16 << 20} {
		for _, dir := range []string{"up", "down"} {
			b.Run(fmt.Sprintf("window=%dKiB/%s", window>>10, dir), func(b *testing.B) {
				p, u := setup(b)
				sp, err := tunnelAlone("tunnel", "", u, p, agentDial, &tunnel.Config{StreamWindow: window})
				if err != nil {
					b.Fatal(err)
				}
				defer sp.close()
				benchStream(b, sp, dir)
			})
		}
	}
}

// BenchmarkDirectTLS is the limit the tunnel is measured against: one TLS
// 1.3 connection on loopback, same chunk size.
func BenchmarkDirectTLS(b *testing.B) {
	for _, dir := range []string{"up", "down"} {
		b.Run(dir, func(b *testing.B) {
			p, u := setup(b)
			benchStream(b, directTLS(u, p), dir)
		})
	}
}
