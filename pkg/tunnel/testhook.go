package tunnel

import (
	"net"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel/internal/testhook"
)

// The constructors below are for tests and benchmarks over other
// transports; package tunneltest exports them.
func init() {
	testhook.NewSession = func(conn net.Conn, cfg any, relay bool) (any, error) {
		return newSessionOver(conn, cfg.(*Config), relay)
	}
	testhook.BatchWebSocketWrites = batchWebSocketWrites
}

// newSessionOver starts one side of a session over conn, an established
// reliable, ordered connection (a net.Pipe, TCP, or a WebSocket net.Conn in
// binary mode). A nil cfg means defaults.
func newSessionOver(conn net.Conn, cfg *Config, relay bool) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newSession(conn, func() {}, cfg.withDefaults(), relay)
}
