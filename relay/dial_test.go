package relay_test

import (
	"crypto/tls"
	"net"
	"net/http"
	"strings"
)

// tlsDialH1 opens a raw TLS connection to the relay speaking HTTP/1.1, as
// kubectl does for upgrades.
func tlsDialH1(e *env) (net.Conn, error) {
	c := e.ts.Client().Transport.(*http.Transport).TLSClientConfig
	return tls.Dial("tcp", strings.TrimPrefix(e.ts.URL, "https://"), &tls.Config{
		RootCAs:      c.RootCAs,
		Certificates: c.Certificates, // the admin's relay client certificate
		NextProtos:   []string{"http/1.1"},
	})
}
