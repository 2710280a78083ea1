// Package bench measures the tunnel path on loopback. These benchmarks cover
// the tunnel library alone against direct TLS, in the same run; the
// side-by-side harness with the full path and the peers builds on them.
package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

const chunk = 32 << 10

// upstreams: "sink" reads everything; "source" writes until the peer closes.
func upstream(b *testing.B, serve func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); serve(c) })
		}
	})
	return ln.Addr().String()
}

func sink(c net.Conn) { io.Copy(io.Discard, c) }

func source(c net.Conn) {
	buf := make([]byte, chunk)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// tunnelPair runs a relay-side pool and an agent client over TLS loopback.
func tunnelPair(b *testing.B, cfg *tunnel.Config, targets map[string]string) *tunnel.Pool {
	pool := &tunnel.Pool{}
	var handlers sync.WaitGroup
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := tunnel.Accept(w, r, cfg)
		if err != nil {
			return
		}
		handlers.Add(1)
		defer handlers.Done()
		pool.Add(s)
		<-s.Done()
	}))
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t := tunnel.Targets{}
	for name, addr := range targets {
		t[name] = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	c, err := tunnel.NewClient(tunnel.ClientOptions{
		URL:     "wss" + strings.TrimPrefix(srv.URL, "https"),
		Tunnels: 1,
		Targets: t,
		Dial:    tunnel.DialOptions{TLSConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, Config: cfg},
		// The "source" upstream never stops; do not wait for it on cleanup.
		DrainTimeout: 10 * time.Millisecond,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done; pool.Close(); handlers.Wait(); srv.Close() })
	for pool.Len() == 0 {
		time.Sleep(time.Millisecond)
	}
	return pool
}

// BenchmarkTunnelStream moves bytes over one stream, relay→agent ("up":
// request bodies) and agent→relay ("down": responses), per stream window.
func BenchmarkTunnelStream(b *testing.B) {
	for _, window := range []uint32{256 << 10, 1 << 20, 4 << 20, 16 << 20} {
		for _, dir := range []string{"up", "down"} {
			b.Run(fmt.Sprintf("window=%dKiB/%s", window>>10, dir), func(b *testing.B) {
				pool := tunnelPair(b, &tunnel.Config{StreamWindow: window}, map[string]string{
					"sink": upstream(b, sink), "source": upstream(b, source),
				})
				target := map[string]string{"up": "sink", "down": "source"}[dir]
				c, err := pool.Open(context.Background(), target)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				buf := make([]byte, chunk)
				b.SetBytes(chunk)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if dir == "up" {
						_, err = c.Write(buf)
					} else {
						_, err = io.ReadFull(c, buf)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDirectTLS is the limit the tunnel is measured against: one TLS
// 1.3 connection on loopback, same chunk size.
func BenchmarkDirectTLS(b *testing.B) {
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	srv.Close() // only its certificate is wanted
	cert := srv.TLS.Certificates[0]
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			sink(c)
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}
