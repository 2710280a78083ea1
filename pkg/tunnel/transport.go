package tunnel

import "net"

// NewRelaySession starts the relay's side of a tunnel (it opens streams) over
// conn, an established connection to an agent. conn must carry bytes reliably
// and in order; over a WebSocket it is the library's net.Conn adapter in
// binary mode (coder/websocket's NetConn, or an equivalent for another
// WebSocket library), and each write becomes one message. Accept builds the
// same session over coder/websocket; this constructor lets the relay or a
// benchmark use another transport. A nil cfg means defaults.
func NewRelaySession(conn net.Conn, cfg *Config) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newSession(conn, func() {}, cfg.withDefaults(), true)
}

// NewAgentSession starts the agent's side of a tunnel (call Serve on it) over
// conn; see NewRelaySession for what conn must be. Dial builds the same
// session over coder/websocket.
func NewAgentSession(conn net.Conn, cfg *Config) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newSession(conn, func() {}, cfg.withDefaults(), false)
}
