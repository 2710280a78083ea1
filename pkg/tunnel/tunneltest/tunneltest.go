// Package tunneltest starts tunnel sessions over a connection the caller
// brings — a net.Pipe, TCP, another WebSocket library's net.Conn — for tests
// and benchmarks (bench/ measures WebSocket libraries this way). Production
// code uses tunnel.Accept on the relay and tunnel.Dial on the agent, which
// build the same sessions over coder/websocket.
package tunneltest

import (
	"net"
	"net/http"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel/internal/testhook"
)

// NewRelaySession starts the relay's side of a tunnel (it opens streams) over
// conn. conn must carry bytes reliably and in order; over a WebSocket it is
// the library's net.Conn adapter in binary mode, each write one message. A nil
// cfg means defaults; an invalid one is an error.
func NewRelaySession(conn net.Conn, cfg *tunnel.Config) (*tunnel.Session, error) {
	return newSession(conn, cfg, true)
}

// NewAgentSession starts the agent's side of a tunnel (call Serve on it) over
// conn; see NewRelaySession for what conn must be.
func NewAgentSession(conn net.Conn, cfg *tunnel.Config) (*tunnel.Session, error) {
	return newSession(conn, cfg, false)
}

func newSession(conn net.Conn, cfg *tunnel.Config, relay bool) (*tunnel.Session, error) {
	s, err := testhook.NewSession(conn, cfg, relay)
	if err != nil {
		return nil, err
	}
	return s.(*tunnel.Session), nil
}

// BatchWebSocketWrites wraps rt, the RoundTripper that carries a
// coder/websocket client's upgrade, so that the client's writes reach the
// network one whole WebSocket frame at a time, as tunnel.Dial does (see
// docs/performance.md for why). It is here so a benchmark can measure the
// difference.
func BatchWebSocketWrites(rt http.RoundTripper) http.RoundTripper {
	return testhook.BatchWebSocketWrites(rt)
}
