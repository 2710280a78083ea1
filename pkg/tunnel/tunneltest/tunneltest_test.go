package tunneltest

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

func TestSessionsOverPipe(t *testing.T) {
	rc, ac := net.Pipe()
	relay, err := NewRelaySession(rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	agent, err := NewAgentSession(ac, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan struct{})
	go func() {
		defer close(served)
		agent.Serve(ctx, tunnel.Targets{"hello": func(context.Context) (net.Conn, error) {
			a, b := net.Pipe()
			go func() { b.Write([]byte("hello")); b.Close() }()
			return a, nil
		}}, time.Second)
	}()
	c, err := relay.Open(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}
	cancel()
	<-served
}

func TestRejectsBadConfig(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := NewRelaySession(a, &tunnel.Config{StreamWindow: 1024}); err == nil {
		t.Fatal("a 1 KiB window was accepted")
	}
}
