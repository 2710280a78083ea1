package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"
	"github.com/rancher/remotedialer"
	"github.com/sirupsen/logrus"

	"github.com/clusterconnect/clusterconnect/clusteragent/connect"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel/tunneltest"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// remotedialerVersion is the peer measured: v0.5.2 and later ask for a newer
// Go than this module's 1.26 (v0.5.2: go 1.26.10, v0.6.2: go 1.27.3), so the
// newest release whose go.mod accepts Go 1.26.0 is used.
const remotedialerVersion = "v0.5.1"

func init() { logrus.SetLevel(logrus.ErrorLevel) }

// pki is one self-signed ECDSA P-256 certificate for 127.0.0.1, used by every
// TLS server here, and the pool that trusts it.
type pki struct {
	cert    tls.Certificate
	pool    *x509.CertPool
	caFile  string // the certificate as PEM, for connect.Config.RelayCAFile
	keyFile string // its key as PEM, for the relay hosts of the idle measures
}

func newPKI() (*pki, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	caFile, err := writePEM("bench-ca-*.pem", "CERTIFICATE", der)
	if err != nil {
		return nil, err
	}
	keyFile, err := writePEM("bench-key-*.pem", "PRIVATE KEY", keyDER)
	if err != nil {
		os.Remove(caFile)
		return nil, err
	}
	return &pki{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool: pool, caFile: caFile, keyFile: keyFile}, nil
}

func writePEM(pattern, typ string, der []byte) (string, error) {
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return f.Name(), pem.Encode(f, &pem.Block{Type: typ, Bytes: der})
}

// loadPKI reads what newPKI wrote, in a host process.
func loadPKI(caFile, keyFile string) (*pki, error) {
	cert, err := tls.LoadX509KeyPair(caFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return &pki{cert: cert, pool: pool, caFile: caFile, keyFile: keyFile}, nil
}

func (p *pki) remove() {
	os.Remove(p.caFile)
	os.Remove(p.keyFile)
}

func (p *pki) serverTLS() *tls.Config {
	// As the relay's own listener: agents and token-mode callers present
	// certificates, verified per request.
	return &tls.Config{Certificates: []tls.Certificate{p.cert}, MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert}
}

func (p *pki) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS13}
}

// startTLSServer serves h on 127.0.0.1 with TLS 1.3; h2 offers HTTP/2 too.
func (p *pki) startTLSServer(h http.Handler, h2 bool) *httptest.Server {
	srv, _ := p.startTLSServerOn("", h, h2)
	return srv
}

// startTLSServerOn is startTLSServer on addr (empty: any free port).
func (p *pki) startTLSServerOn(addr string, h http.Handler, h2 bool) (*httptest.Server, error) {
	srv := httptest.NewUnstartedServer(h)
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.EnableHTTP2 = h2
	srv.TLS = p.serverTLS()
	srv.StartTLS()
	return srv, nil
}

// streamPath is a contender at the stream level: open gives a connection that
// ends at the stream upstream.
type streamPath struct {
	name, note string
	open       func(ctx context.Context) (net.Conn, error)
	close      func()
}

// httpPath is a contender at the HTTP level: base + "/bytes?n=…" etc. reach
// the HTTP upstream through the path.
type httpPath struct {
	name, note string
	base       string
	client     *http.Client
	close      func()
}

func directTCP(u *upstreams) *streamPath {
	return &streamPath{name: "direct TCP", note: "the limit", close: func() {},
		open: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", u.tcp)
		}}
}

func directTLS(u *upstreams, p *pki) *streamPath {
	return &streamPath{name: "direct TLS 1.3", note: "the limit with encryption", close: func() {},
		open: func(ctx context.Context) (net.Conn, error) {
			d := tls.Dialer{Config: p.clientTLS()}
			return d.DialContext(ctx, "tcp", u.tls)
		}}
}

// agentKind is how the agent's end of a tunnel is built.
type agentKind int

const (
	agentDial    agentKind = iota // tunnel.NewClient → tunnel.Dial: coder/websocket as shipped
	agentBatched                  // coder/websocket with tunneltest.BatchWebSocketWrites (what Dial would do with it)
	agentGorilla                  // gorilla/websocket with 64 KiB buffers, tunneltest.NewAgentSession
)

// runAgent keeps n tunnels of the given kind to url until ctx is done and
// serves targets on them. Agents built here (batched, gorilla) mirror Dial's
// HTTP/1.1 upgrade with TLS 1.3; they do not reconnect.
func runAgent(ctx context.Context, kind agentKind, url string, n int, p *pki, cfg *tunnel.Config, targets tunnel.Targets) (wait func(), err error) {
	var wg sync.WaitGroup
	if kind == agentDial {
		c, err := tunnel.NewClient(tunnel.ClientOptions{URL: url, Tunnels: n, Targets: targets,
			Dial:         tunnel.DialOptions{TLSConfig: p.clientTLS(), Config: cfg},
			DrainTimeout: 50 * time.Millisecond})
		if err != nil {
			return nil, err
		}
		wg.Go(func() { c.Run(ctx) })
		return wg.Wait, nil
	}
	for range n {
		conn, err := dialAgentConn(ctx, kind, url, p, nil)
		if err != nil {
			return nil, err
		}
		s, err := tunneltest.NewAgentSession(conn, cfg)
		if err != nil {
			return nil, err
		}
		wg.Go(func() { s.Serve(ctx, targets, 50*time.Millisecond) })
	}
	return wg.Wait, nil
}

// dialAgentConn opens one agent WebSocket to url as a net.Conn; local, when
// set, is the loopback address to dial from (many agents need many source
// addresses).
func dialAgentConn(ctx context.Context, kind agentKind, url string, p *pki, local net.Addr) (net.Conn, error) {
	nd := &net.Dialer{LocalAddr: local}
	tlsCfg := p.clientTLS()
	if kind == agentGorilla {
		d := &gorilla.Dialer{NetDialContext: nd.DialContext, TLSClientConfig: tlsCfg, ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10,
			Subprotocols: []string{tunnel.Subprotocol}, HandshakeTimeout: 10 * time.Second}
		ws, _, err := d.DialContext(ctx, url, nil)
		if err != nil {
			return nil, err
		}
		return &gorillaConn{Conn: ws}, nil
	}
	tlsCfg.NextProtos = []string{"http/1.1"}
	tr := &http.Transport{DialContext: nd.DialContext, TLSClientConfig: tlsCfg, DisableKeepAlives: true,
		WriteBufferSize: 64 << 10, ReadBufferSize: 64 << 10}
	var rt http.RoundTripper = tr
	if kind == agentBatched {
		rt = tunneltest.BatchWebSocketWrites(tr)
	}
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: &http.Client{Transport: rt}, Subprotocols: []string{tunnel.Subprotocol}})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(-1)
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}

// gorillaConn adapts a gorilla/websocket connection to net.Conn: each Write
// is one binary message, Read reads messages back to back.
type gorillaConn struct {
	*gorilla.Conn
	r  io.Reader
	mu sync.Mutex
}

func (c *gorillaConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			_, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *gorillaConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.WriteMessage(gorilla.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *gorillaConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func wsURL(httpsURL, path string) string { return "wss" + strings.TrimPrefix(httpsURL, "https") + path }

// tunnelAlone is our tunnel library with no HTTP: a relay-side Pool on a TLS
// endpoint (tunnel.Accept) and one agent tunnel.
func tunnelAlone(name, note string, u *upstreams, p *pki, kind agentKind, cfg *tunnel.Config) (*streamPath, error) {
	pool := &tunnel.Pool{}
	var handlers sync.WaitGroup
	srv := p.startTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := tunnel.Accept(w, r, cfg)
		if err != nil {
			return
		}
		handlers.Add(1)
		defer handlers.Done()
		pool.Add(s)
		<-s.Done()
	}), false)
	ctx, cancel := context.WithCancel(context.Background())
	wait, err := runAgent(ctx, kind, wsURL(srv.URL, "/tunnel"), 1, p, cfg, tunnel.Targets{"bench": tcpTarget(u.tcp)})
	if err != nil {
		cancel()
		srv.Close()
		return nil, err
	}
	if err := waitFor(func() bool { return pool.Len() == 1 }); err != nil {
		cancel()
		srv.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &streamPath{name: name, note: note,
		open: func(ctx context.Context) (net.Conn, error) { return pool.OpenEarly(ctx, "bench") },
		close: func() {
			cancel()
			pool.Close()
			wait()
			handlers.Wait()
			srv.Close()
		}}, nil
}

func tcpTarget(addr string) tunnel.DialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

func waitFor(cond func() bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for the tunnel")
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// remotedialerServer is the peer's relay side on a TLS endpoint; agents
// connect at /connect and name themselves in X-Agent.
func remotedialerServer(p *pki, extra http.Handler) (*remotedialer.Server, *httptest.Server) {
	rd, srv, _ := remotedialerServerOn("", p, extra)
	return rd, srv
}

// remotedialerServerOn is remotedialerServer on addr (empty: any free port).
func remotedialerServerOn(addr string, p *pki, extra http.Handler) (*remotedialer.Server, *httptest.Server, error) {
	rd := remotedialer.New(func(r *http.Request) (string, bool, error) {
		return r.Header.Get("X-Agent"), true, nil
	}, remotedialer.DefaultErrorWriter)
	mux := http.NewServeMux()
	mux.Handle("/connect", rd)
	if extra != nil {
		mux.Handle("/", extra)
	}
	srv, err := p.startTLSServerOn(addr, mux, true)
	return rd, srv, err
}

// runRemotedialerAgent connects one remotedialer client named name.
func runRemotedialerAgent(ctx context.Context, url, name string, p *pki, local net.Addr) func() {
	var wg sync.WaitGroup
	wg.Go(func() {
		d := remotedialerDialer(&net.Dialer{LocalAddr: local}, p)
		remotedialer.ConnectToProxy(ctx, url, http.Header{"X-Agent": {name}}, func(string, string) bool { return true }, d, nil)
	})
	return wg.Wait
}

func remotedialerDialer(nd *net.Dialer, p *pki) *gorilla.Dialer {
	return &gorilla.Dialer{NetDialContext: nd.DialContext, TLSClientConfig: p.clientTLS(), HandshakeTimeout: 10 * time.Second}
}

func remotedialerAlone(u *upstreams, p *pki) (*streamPath, error) {
	rd, srv := remotedialerServer(p, nil)
	ctx, cancel := context.WithCancel(context.Background())
	wait := runRemotedialerAgent(ctx, wsURL(srv.URL, "/connect"), "agent", p, nil)
	if err := waitFor(func() bool { return rd.HasSession("agent") }); err != nil {
		cancel()
		return nil, err
	}
	dial := rd.Dialer("agent")
	return &streamPath{name: "remotedialer " + remotedialerVersion, note: "peer (gorilla/websocket, own framing)",
		open:  func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp", u.tcp) },
		close: func() { cancel(); srv.Close(); wait() }}, nil
}

// allowAll authenticates every agent: authentication runs once per tunnel
// and is not what is measured.
type allowAll struct{}

func (allowAll) AuthenticateAgent(context.Context, *http.Request, *store.Cluster) (time.Time, error) {
	return time.Now().Add(24 * time.Hour), nil
}

// newRelay is a relay.Server with a bolt store in a temporary folder holding
// the named clusters, without limits (one caller floods it on purpose), and
// the admin's relay client certificate, which kubectl's side presents.
func newRelay(cfg *tunnel.Config, clusters ...string) (*relay.Server, func(), tls.Certificate, error) {
	dir, err := os.MkdirTemp("", "bench-relay-")
	if err != nil {
		return nil, nil, tls.Certificate{}, err
	}
	st, err := store.OpenBolt(filepath.Join(dir, "relay.db"))
	if err != nil {
		return nil, nil, tls.Certificate{}, err
	}
	cleanup := func() { st.Close(); os.RemoveAll(dir) }
	for _, name := range clusters {
		if err := st.CreateCluster(context.Background(), &store.Cluster{Name: name, UID: name, CreatedAt: time.Now()}); err != nil {
			cleanup()
			return nil, nil, tls.Certificate{}, err
		}
	}
	ca, err := newClusterCA()
	if err != nil {
		cleanup()
		return nil, nil, tls.Certificate{}, err
	}
	rs, err := relay.New(relay.Config{Store: st, ExternalURL: "https://127.0.0.1", AdminToken: "bench",
		ClusterCA: ca, Agents: allowAll{}, Tunnel: cfg, Limits: &unlimited})
	if err != nil {
		cleanup()
		return nil, nil, tls.Certificate{}, err
	}
	cert, err := adminCert(ca)
	if err != nil {
		cleanup()
		return nil, nil, tls.Certificate{}, err
	}
	return rs, cleanup, cert, nil
}

// newClusterCA is a fresh relay cluster CA.
func newClusterCA() (*clusterca.CA, error) {
	certPEM, keyPEM, err := clusterca.Generate()
	if err != nil {
		return nil, err
	}
	return clusterca.Load(certPEM, keyPEM)
}

// adminCert is a relay client certificate of the admin from ca.
func adminCert(ca *clusterca.CA) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM, leaf, err := ca.IssuePrincipal(csr, api.Principal{Kind: api.PrincipalKindAdmin, ID: "admin"}, time.Now(), 24*time.Hour)
	if err != nil {
		return tls.Certificate{}, err
	}
	blk, _ := pem.Decode(certPEM)
	return tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: key, Leaf: leaf}, nil
}

// httpClient is kubectl's side: HTTP/2 over TLS 1.3 (as kubectl talks to an
// apiserver), trusting the bench CA and presenting certs (a relay client
// certificate for our relay).
func httpClient(p *pki, certs ...tls.Certificate) *http.Client {
	cfg := p.clientTLS()
	cfg.Certificates = certs
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true,
		MaxIdleConnsPerHost: 128, DisableCompression: true}}
}

func directHTTPS(u *upstreams, p *pki) *httpPath {
	c := httpClient(p)
	return &httpPath{name: "direct HTTPS", note: "client → upstream, HTTP/2 over TLS 1.3", base: u.https.URL, client: c,
		close: c.CloseIdleConnections}
}

// fullPath is kubectl → relay.Server → tunnel → agent → HTTP upstream, the
// relay and (for agentDial) the clusterconnect agent as the binaries run them.
func fullPath(name, note string, u *upstreams, p *pki, kind agentKind, cfg *tunnel.Config) (*httpPath, error) {
	rs, cleanup, cert, err := newRelay(cfg, "bench")
	if err != nil {
		return nil, err
	}
	srv := p.startTLSServer(rs, true)
	ctx, cancel := context.WithCancel(context.Background())
	var wait func()
	const tunnels = 2 // the agent's default
	if kind == agentDial {
		a, err := connect.New(connect.Config{RelayURL: srv.URL, Cluster: "bench", Tunnels: tunnels,
			Targets: map[string]connect.Upstream{api.KubeTarget: {URL: "tcp://" + u.http}}, Tunnel: cfg,
			RelayCAFile: p.caFile, DrainTimeout: 50 * time.Millisecond})
		if err != nil {
			cancel()
			return nil, err
		}
		var wg sync.WaitGroup
		wg.Go(func() { a.Run(ctx) })
		wait = wg.Wait
	} else {
		wait, err = runAgent(ctx, kind, wsURL(srv.URL, "/agent/v1/clusters/bench/tunnel"), tunnels, p, cfg,
			tunnel.Targets{api.KubeTarget: tcpTarget(u.http)})
		if err != nil {
			cancel()
			return nil, err
		}
	}
	if err := waitFor(func() bool { return rs.Connected("bench") == tunnels }); err != nil {
		cancel()
		srv.Close()
		cleanup()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c := httpClient(p, cert)
	return &httpPath{name: name, note: note, base: srv.URL + "/clusters/bench", client: c,
		close: func() {
			c.CloseIdleConnections()
			cancel()
			sctx, scancel := context.WithTimeout(context.Background(), time.Second)
			rs.Shutdown(sctx)
			scancel()
			wait()
			srv.Close()
			cleanup()
		}}, nil
}

// remotedialerFull is the peer in the same topology: a reverse proxy whose
// transport dials through remotedialer, as Rancher's cluster proxy does.
func remotedialerFull(u *upstreams, p *pki) (*httpPath, error) {
	var rd *remotedialer.Server
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", u.http
			pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, "/clusters/bench")
			pr.Out.URL.RawPath = ""
		},
		Transport: &http.Transport{
			DialContext:         func(ctx context.Context, n, a string) (net.Conn, error) { return rd.Dialer("agent")(ctx, n, a) },
			MaxIdleConnsPerHost: 64, DisableCompression: true, WriteBufferSize: 64 << 10, ReadBufferSize: 64 << 10,
		},
		FlushInterval: -1,
	}
	rd, srv := remotedialerServer(p, proxy)
	ctx, cancel := context.WithCancel(context.Background())
	wait := runRemotedialerAgent(ctx, wsURL(srv.URL, "/connect"), "agent", p, nil)
	if err := waitFor(func() bool { return rd.HasSession("agent") }); err != nil {
		cancel()
		return nil, err
	}
	c := httpClient(p)
	return &httpPath{name: "remotedialer " + remotedialerVersion, note: "peer: reverse proxy dialling through remotedialer",
		base: srv.URL + "/clusters/bench", client: c,
		close: func() { c.CloseIdleConnections(); cancel(); srv.Close(); wait() }}, nil
}
