package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/xtaci/smux"
	"golang.org/x/net/http2"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

// Candidate muxes, measured beside yamux over the same WebSocket (the relay
// on coder/websocket, the agent's writes batched as tunnel.Dial does). Each
// stream opens as ours does, with a round trip: the relay names the target,
// the agent dials it and answers, then bytes flow.

const muxWindow = 4 << 20 // per stream, as tunnel.DefaultStreamWindow

// muxEndpoint is a TLS endpoint that upgrades each agent to a WebSocket
// and hands its net.Conn to accept.
func muxEndpoint(p *pki, accept func(net.Conn)) (url string, stop func()) {
	var handlers sync.WaitGroup
	srv := p.startTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{tunnel.Subprotocol}, InsecureSkipVerify: true})
		if err != nil {
			return
		}
		ws.SetReadLimit(-1)
		handlers.Go(func() { accept(websocket.NetConn(context.Background(), ws, websocket.MessageBinary)) })
	}), false)
	return wsURL(srv.URL, "/tunnel"), func() { srv.Close(); handlers.Wait() }
}

func smuxConfig() *smux.Config {
	c := smux.DefaultConfig()
	c.Version = 2 // per-stream windows
	c.MaxStreamBuffer = muxWindow
	c.MaxReceiveBuffer = 4 * muxWindow
	c.MaxFrameSize = 65535
	c.KeepAliveInterval = tunnel.DefaultKeepAliveInterval
	return c
}

// smuxAlone is github.com/xtaci/smux (v2: per-stream flow control; the mux
// of frp and kcptun) in place of yamux.
func smuxAlone(u *upstreams, p *pki) (*streamPath, error) {
	sessc := make(chan *smux.Session, 1)
	url, stopSrv := muxEndpoint(p, func(c net.Conn) {
		s, err := smux.Client(c, smuxConfig())
		if err != nil {
			c.Close()
			return
		}
		sessc <- s
		<-s.CloseChan()
	})
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := dialAgentConn(ctx, agentBatched, url, p, nil)
	if err != nil {
		cancel()
		stopSrv()
		return nil, err
	}
	agent, err := smux.Server(conn, smuxConfig())
	if err != nil {
		cancel()
		stopSrv()
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			st, err := agent.AcceptStream()
			if err != nil {
				return
			}
			go serveMuxStream(st, u.tcp)
		}
	})
	relaySide, err := await(sessc, "smux: the session")
	if err != nil {
		cancel()
		agent.Close()
		stopSrv()
		return nil, err
	}
	return &streamPath{name: "smux v1.5.58 (v2 protocol)", note: "xtaci/smux in place of yamux, 4 MiB per stream, same WebSocket",
		open: func(ctx context.Context) (net.Conn, error) {
			st, err := relaySide.OpenStream()
			if err != nil {
				return nil, err
			}
			return handshakeMux(ctx, st)
		},
		close: func() { cancel(); relaySide.Close(); agent.Close(); wg.Wait(); stopSrv() }}, nil
}

// await is the relay side's end of a mux, once the endpoint has it.
func await[T any](c <-chan T, what string) (T, error) {
	select {
	case v := <-c:
		return v, nil
	case <-time.After(10 * time.Second):
		var zero T
		return zero, errors.New(what + " did not come up")
	}
}

// handshakeMux asks the agent for the target and waits for its answer.
func handshakeMux(ctx context.Context, c net.Conn) (net.Conn, error) {
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	b := []byte{1}
	if _, err := c.Write(b); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 0 {
		c.Close()
		return nil, fmt.Errorf("stream refused (%v)", err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// serveMuxStream is the agent's side: read the target, dial it, answer,
// pipe.
func serveMuxStream(st net.Conn, addr string) {
	defer st.Close()
	b := []byte{0}
	if _, err := io.ReadFull(st, b); err != nil {
		return
	}
	up, err := net.Dial("tcp", addr)
	if err != nil {
		st.Write([]byte{1})
		return
	}
	defer up.Close()
	if _, err := st.Write([]byte{0}); err != nil {
		return
	}
	done := make(chan struct{})
	go func() { io.Copy(up, st); up.(*net.TCPConn).CloseWrite(); close(done) }()
	io.Copy(st, up)
	<-done
}

// h2Alone is HTTP/2 as the mux: the agent serves HTTP/2 (prior knowledge)
// on its WebSocket and the relay is the HTTP/2 client over it, one request
// per stream, full duplex — as Konnectivity carries one gRPC stream per
// connection.
func h2Alone(u *upstreams, p *pki) (*streamPath, error) {
	ccc := make(chan *http2.ClientConn, 1)
	tr := &http2.Transport{MaxReadFrameSize: 1 << 20}
	url, stopSrv := muxEndpoint(p, func(c net.Conn) {
		cc, err := tr.NewClientConn(c)
		if err != nil {
			c.Close()
			return
		}
		ccc <- cc
	})
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := dialAgentConn(ctx, agentBatched, url, p, nil)
	if err != nil {
		cancel()
		stopSrv()
		return nil, err
	}
	h2s := &http2.Server{MaxUploadBufferPerStream: muxWindow, MaxUploadBufferPerConnection: 4 * muxWindow, MaxReadFrameSize: 1 << 20}
	var wg sync.WaitGroup
	wg.Go(func() {
		h2s.ServeConn(conn, &http2.ServeConnOpts{Context: ctx, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			up, err := net.Dial("tcp", u.tcp)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer up.Close()
			w.WriteHeader(http.StatusOK)
			rc := http.NewResponseController(w)
			rc.Flush()
			done := make(chan struct{})
			go func() { io.Copy(up, r.Body); up.(*net.TCPConn).CloseWrite(); close(done) }()
			buf := make([]byte, chunk)
			for {
				n, err := up.Read(buf)
				if n > 0 {
					if _, werr := w.Write(buf[:n]); werr != nil {
						break
					}
					rc.Flush()
				}
				if err != nil {
					break
				}
			}
			<-done
		})})
	})
	cc, err := await(ccc, "http2: the connection")
	if err != nil {
		cancel()
		conn.Close()
		stopSrv()
		return nil, err
	}
	return &streamPath{name: "HTTP/2 as the mux", note: "x/net/http2 over the same WebSocket: one full-duplex request per stream (Konnectivity's shape)",
		open: func(ctx context.Context) (net.Conn, error) {
			pr, pw := io.Pipe()
			req, _ := http.NewRequestWithContext(context.WithoutCancel(ctx), "POST", "http://agent/stream", pr)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				pw.Close()
				return nil, err
			}
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				pw.Close()
				return nil, fmt.Errorf("stream refused: HTTP %d", resp.StatusCode)
			}
			return &h2Stream{r: resp.Body, w: pw}, nil
		},
		close: func() { cancel(); cc.Close(); conn.Close(); wg.Wait(); stopSrv() }}, nil
}

// h2Stream is one HTTP/2 request and its response as a net.Conn; a
// deadline that passes closes it.
type h2Stream struct {
	r     io.ReadCloser
	w     *io.PipeWriter
	mu    sync.Mutex
	timer *time.Timer
}

func (s *h2Stream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *h2Stream) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *h2Stream) Close() error {
	s.w.Close()
	return s.r.Close()
}
func (s *h2Stream) LocalAddr() net.Addr  { return &net.TCPAddr{} }
func (s *h2Stream) RemoteAddr() net.Addr { return &net.TCPAddr{} }
func (s *h2Stream) SetDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !t.IsZero() {
		s.timer = time.AfterFunc(time.Until(t), func() { s.Close() })
	}
	return nil
}
func (s *h2Stream) SetReadDeadline(t time.Time) error  { return s.SetDeadline(t) }
func (s *h2Stream) SetWriteDeadline(t time.Time) error { return s.SetDeadline(t) }
