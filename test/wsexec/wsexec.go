// Package wsexec is a minimal client of the Kubernetes exec WebSocket channel
// protocol (v5.channel.k8s.io), for tests that need control kubectl does not
// give: stdin written as one large WebSocket message, stdin left open.
package wsexec

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"

	"github.com/coder/websocket"
)

// Channels of the protocol.
const (
	Stdin  = 0
	Stdout = 1
	Stderr = 2
	Error  = 3
	Close  = 255 // v5: closes the channel named by the next byte
)

// Options say where to exec.
type Options struct {
	// Server is the apiserver base URL (e.g. https://relay/clusters/c1).
	Server string
	// Token is sent as a bearer token; empty sends none.
	Token string
	// TLS verifies the server; nil means the system roots.
	TLS       *tls.Config
	Namespace string
	Pod       string
	Container string
	Command   []string
}

// Session is an exec in progress.
type Session struct {
	c *websocket.Conn
}

// Dial starts the exec with stdin and stdout attached.
func Dial(ctx context.Context, o Options) (*Session, error) {
	q := url.Values{"stdin": {"true"}, "stdout": {"true"}, "stderr": {"true"}}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	for _, c := range o.Command {
		q.Add("command", c)
	}
	u := fmt.Sprintf("%s/api/v1/namespaces/%s/pods/%s/exec?%s", o.Server, url.PathEscape(o.Namespace), url.PathEscape(o.Pod), q.Encode())
	hdr := http.Header{}
	if o.Token != "" {
		hdr.Set("Authorization", "Bearer "+o.Token)
	}
	tc := &tls.Config{}
	if o.TLS != nil {
		tc = o.TLS.Clone()
	}
	tc.NextProtos = []string{"http/1.1"} // exec upgrades need HTTP/1.1
	tr := &http.Transport{TLSClientConfig: tc}
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: tr},
		HTTPHeader:   hdr,
		Subprotocols: []string{"v5.channel.k8s.io"},
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("exec: %w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, fmt.Errorf("exec: %w", err)
	}
	c.SetReadLimit(-1)
	return &Session{c: c}, nil
}

// WriteStdin sends p as one WebSocket message on the stdin channel.
func (s *Session) WriteStdin(ctx context.Context, p []byte) error {
	msg := make([]byte, 1+len(p))
	msg[0] = Stdin
	copy(msg[1:], p)
	return s.c.Write(ctx, websocket.MessageBinary, msg)
}

// ReadStdout reads until n bytes of stdout arrived or ctx ends, and returns
// what arrived. Stderr and the error channel end it with an error.
func (s *Session) ReadStdout(ctx context.Context, n int) ([]byte, error) {
	var out bytes.Buffer
	for out.Len() < n {
		_, msg, err := s.c.Read(ctx)
		if err != nil {
			return out.Bytes(), err
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case Stdout:
			out.Write(msg[1:])
		case Stderr, Error:
			if len(msg) > 1 {
				return out.Bytes(), fmt.Errorf("exec channel %d: %s", msg[0], msg[1:])
			}
		}
	}
	return out.Bytes(), nil
}

// Close ends the session.
func (s *Session) Close() error { return s.c.Close(websocket.StatusNormalClosure, "") }
