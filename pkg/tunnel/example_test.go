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
// returns the agent's wss:// URL, its TLS options, a channel that receives
// each session once it is in the pool, and a stop function.
func relay(pool *tunnel.Pool) (url string, opts *tunnel.DialOptions, added <-chan *tunnel.Session, stop func()) {
	sessions := make(chan *tunnel.Session, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A real relay authenticates the agent's certificate first.
		s, err := tunnel.Accept(w, r, nil)
		if err != nil {
			return
		}
		pool.Add(s)
		sessions <- s
		<-s.Done()
	}))
	srv.EnableHTTP2 = false
	srv.StartTLS()
	tlsCfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
	return "wss" + strings.TrimPrefix(srv.URL, "https") + "/tunnel", &tunnel.DialOptions{TLSConfig: tlsCfg}, sessions, func() {
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
	url, opts, added, stop := relay(&pool)
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

	// Relay side, once Accept has put the session into the pool.
	<-added
	c, err := pool.Open(context.Background(), "echo")
	if err != nil {
		fmt.Println(err)
		return
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
	url, opts, added, stop := relay(&pool)
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
	_, err = (<-added).Open(context.Background(), "10.0.0.1:22")
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
