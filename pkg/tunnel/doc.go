// Package tunnel carries many independent byte streams between the relay
// and a cluster's agent over one outbound connection the agent dials: TLS,
// a WebSocket upgrade, and a yamux session on top. SPEC.md, beside this file,
// is the wire contract; this comment is the map of the code.
//
// # Agent side
//
// Dial connects one tunnel (the agent is the WebSocket client and the yamux
// server) and returns its Session; Session.Serve accepts the relay's streams
// and pipes each to an upstream named in its Targets allow-list. A name that
// is not on the list is refused without a dial: the tunnel is not an open
// proxy. Client keeps N tunnels up, each on its own loop that reconnects with
// exponential backoff and full jitter (Backoff), and can Refresh them after
// the credentials rotate.
//
// # Relay side
//
// Accept upgrades an already authenticated agent request and returns the
// relay's Session (the yamux client: only the relay opens streams). A Pool
// holds a cluster's sessions; Pool.Open opens a stream on the least busy live
// one and moves on when a session has died or is draining. Pool.OpenEarly
// does the same without waiting for the agent's reply: the first bytes
// written go out with the stream's header, and a refusal comes from the first
// Read (SPEC.md §3, "Early data"); the relay calls it from its
// http.Transport's DialContext.
//
// # Streams
//
// Every stream starts with a request header naming the target and the
// agent's reply: a Code and a message. A refusal reaches Open's caller as a
// *StreamError; the Code's String is the reason label of the error metric.
// After an ok reply the stream is a raw byte pipe. The relay never
// half-closes: its close ends the upstream connection at once; the agent's
// close passes on the upstream's EOF. Config.CloseTimeout resets a stream
// whose peer never closes its side.
//
// # Liveness and drain
//
// Each side pings every Config.KeepAliveInterval; a ping or frame write that
// takes over Config.KeepAliveTimeout ends the session. Session.Shutdown
// drains: no new stream is opened or accepted, the peer learns of it at once
// (a yamux go-away; Session.OnDrain hooks run on both sides, and the relay
// closes its idle keep-alive streams there), and the session closes as soon
// as the last stream in flight has ended, or at the deadline.
//
// # Metrics
//
// NewMetrics creates the Prometheus collectors (sessions, streams, bytes,
// stream dial time, reconnects, errors by reason); pass them in
// Config.Metrics on either side. Config's zero value is usable throughout:
// every zero field means the default named beside it.
//
// Package tunneltest starts sessions over a connection the caller brings
// (a pipe, TCP, another WebSocket library), for tests and benchmarks.
package tunnel
