package checks

import (
	"context"
	"encoding/base64"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRandomText(t *testing.T) {
	a, b := RandomText(t, 1000), RandomText(t, 1000)
	raw, err := base64.StdEncoding.DecodeString(a)
	if err != nil || len(raw) != 1000 {
		t.Fatalf("RandomText(1000) = %d bytes after base64 decoding (err %v), want 1000", len(raw), err)
	}
	if a == b {
		t.Error("two RandomText calls returned the same text")
	}
}

func TestEchoServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	port := StartEchoServer(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	EchoRoundTrip(t, ctx, addr, RandomText(t, 1<<20))
	EchoRoundTrip(t, ctx, addr, "")
	msgs := []string{RandomText(t, 10<<10), RandomText(t, 10<<10), "x"}
	var wg sync.WaitGroup
	for _, m := range msgs {
		wg.Go(func() { EchoRoundTrip(t, ctx, addr, m) })
	}
	wg.Wait()
}

// TestEchoServerStopsWithOpenConn keeps a client connection open while
// the echo server's cleanup runs; the cleanup must still end (and goleak in
// TestMain finds no goroutine left).
func TestEchoServerStopsWithOpenConn(t *testing.T) {
	var c net.Conn
	t.Cleanup(func() { c.Close() }) // runs after the echo server's cleanup
	port := StartEchoServer(t)
	var d net.Dialer
	var err error
	if c, err = d.DialContext(t.Context(), "tcp", "127.0.0.1:"+strconv.Itoa(port)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("echo: got %q, %v", b, err)
	}
}
