// Package testhook carries constructors from package tunnel to package
// tunneltest without exporting them from tunnel's API. Package tunnel fills
// the variables in its init; nothing else may set them.
//
// The types are loose (any) because this package cannot import tunnel, which
// imports it; tunneltest converts them back.
package testhook

import (
	"net"
	"net/http"
)

var (
	// NewSession starts a session over conn; cfg is a *tunnel.Config and the
	// result a *tunnel.Session. relay picks the relay's side.
	NewSession func(conn net.Conn, cfg any, relay bool) (any, error)
	// BatchWebSocketWrites is the round tripper wrapper Dial uses.
	BatchWebSocketWrites func(rt http.RoundTripper) http.RoundTripper
)
