package tunnel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

// relay starts a loopback TLS relay endpoint whose tunnels join pool; it
// returns the agent's wss:// URL, its TLS options, and a stop function.
func relay(pool *tunnel.Pool) (url string, opts *tunnel.DialOptions, stop func()) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A real relay authenticates the agent's certificate first.
		s, err := tunnel.Accept(w, r, nil)
		if err != nil {
			return
		}
		pool.Add(s)
		<-s.Done()
	}))
	srv.EnableHTTP2 = false
	srv.StartTLS()
	tlsCfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
	return "wss" + strings.TrimPrefix(srv.URL, "https") + "/tunnel", &tunnel.DialOptions{TLSConfig: tlsCfg}, func() {
		pool.Close()
		srv.Close()
	}
}

// echoTarget is an upstream in memory that echoes what it reads.
func echoTarget(ctx context.Context) (net.Conn, error) {
	agentEnd, upstream := net.Pipe()
	go func() { defer upstream.Close(); io.Copy(upstream, upstream) }()
	return agentEnd, nil
}

// The agent dials the relay and serves its allow-list; the relay opens a
// stream to a target by name and talks through it.
func Example() {
	var pool tunnel.Pool
	url, opts, stop := relay(&pool)
	defer stop()

	// Agent side.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agent, err := tunnel.Dial(ctx, url, opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- agent.Serve(ctx, tunnel.Targets{"echo": echoTarget}, 0) }()

	// Relay side. Accept may still be adding the session to the pool.
	var c net.Conn
	for c == nil {
		if c, err = pool.Open(context.Background(), "echo"); err != nil && !errors.Is(err, tunnel.ErrNoTunnel) {
			fmt.Println(err)
			return
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Fprint(c, "hello through the tunnel")
	buf := make([]byte, len("hello through the tunnel"))
	io.ReadFull(c, buf)
	fmt.Println(string(buf))
	c.Close()

	cancel() // the agent drains: the stream is closed, so at once
	fmt.Println("serve:", <-served)
	// Output:
	// hello through the tunnel
	// serve: <nil>
}

// A target that is not on the agent's allow-list is refused without a dial;
// the code says why.
func ExampleSession_Open() {
	var pool tunnel.Pool
	url, opts, stop := relay(&pool)
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agent, err := tunnel.Dial(ctx, url, opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer agent.Close()
	go agent.Serve(ctx, tunnel.Targets{"echo": echoTarget}, 0)
	for pool.Len() == 0 {
		time.Sleep(time.Millisecond)
	}
	_, err = pool.Sessions()[0].Open(context.Background(), "10.0.0.1:22")
	var se *tunnel.StreamError
	if errors.As(err, &se) {
		fmt.Println(se.Code)
	}
	// Output: target_not_allowed
}

// A Backoff's wait before attempt k is drawn from (0, min(Max, Min·2ᵏ)].
func ExampleBackoff_Delay() {
	b := tunnel.Backoff{} // 500 ms to 8 s
	for k := range 6 {
		d := b.Delay(k)
		fmt.Println(k, d > 0 && d <= min(8*time.Second, 500*time.Millisecond<<k))
	}
	// Output:
	// 0 true
	// 1 true
	// 2 true
	// 3 true
	// 4 true
	// 5 true
}
