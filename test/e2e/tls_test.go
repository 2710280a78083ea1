package e2e

import "crypto/tls"

// insecureTLS is for readiness polls only; real checks verify the relay CA.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }
