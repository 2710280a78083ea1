package bench

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
)

// The stream upstream speaks a tiny protocol so that every contender, whether
// or not it passes half-closes on, can be timed to the last byte. The first
// byte names the operation:
//
//	'S' n(8): sink; read n bytes, then answer one byte.
//	'D' n(8): source; write n bytes.
//	'E':      echo whatever comes until the peer closes.
const (
	opSink   = 'S'
	opSource = 'D'
	opEcho   = 'E'
	chunk    = 32 << 10
)

var zeros = make([]byte, chunk)

func serveStream(c net.Conn) {
	defer c.Close()
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:1]); err != nil {
		return
	}
	switch hdr[0] {
	case opEcho:
		io.Copy(c, c)
		return
	case opSink, opSource:
	default:
		return
	}
	if _, err := io.ReadFull(c, hdr[1:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(hdr[1:]))
	if hdr[0] == opSink {
		if _, err := io.CopyN(io.Discard, c, n); err == nil {
			c.Write([]byte{1})
		}
		io.Copy(io.Discard, c) // until the peer closes
		return
	}
	for n > 0 {
		w, err := c.Write(zeros[:min(n, chunk)])
		if err != nil {
			return
		}
		n -= int64(w)
	}
	io.Copy(io.Discard, c)
}

// upstreams are the servers every path ends at: the stream protocol over TCP
// and over TLS 1.3, and an HTTP server (plain, for the agents' targets, and
// HTTPS, for the direct baseline).
type upstreams struct {
	tcp, tls   string // stream protocol addresses
	http       string // host:port of the plain HTTP upstream
	https      *httptest.Server
	cert       tls.Certificate
	closeFuncs []func()
}

func startUpstreams(cert tls.Certificate) (*upstreams, error) {
	u := &upstreams{cert: cert}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u.tcp = ln.Addr().String()
	u.closeFuncs = append(u.closeFuncs, serveListener(ln))
	tln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		return nil, err
	}
	u.tls = tln.Addr().String()
	u.closeFuncs = append(u.closeFuncs, serveListener(tln))

	h := httpUpstream()
	plain := httptest.NewServer(h)
	u.http = plain.Listener.Addr().String()
	u.closeFuncs = append(u.closeFuncs, plain.Close)
	u.https = httptest.NewUnstartedServer(h)
	u.https.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	u.https.StartTLS()
	u.closeFuncs = append(u.closeFuncs, u.https.Close)
	return u, nil
}

func (u *upstreams) Close() {
	for _, f := range u.closeFuncs {
		f()
	}
}

func serveListener(ln net.Listener) func() {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				serveStream(c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			})
		}
	})
	return func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

// listJSON is a `kubectl get pods`-sized answer: a Kubernetes-style list of
// about 1 MiB.
var listJSON = func() []byte {
	type item struct {
		Kind     string            `json:"kind"`
		Metadata map[string]string `json:"metadata"`
		Spec     map[string]string `json:"spec"`
	}
	var items []item
	for i := 0; ; i++ {
		items = append(items, item{Kind: "Pod", Metadata: map[string]string{
			"name": fmt.Sprintf("web-%06d", i), "namespace": "default", "uid": fmt.Sprintf("%032x", i),
			"resourceVersion": strconv.Itoa(100000 + i), "creationTimestamp": "2026-01-01T00:00:00Z",
		}, Spec: map[string]string{"nodeName": fmt.Sprintf("node-%03d", i%100), "image": "registry.example/web:1.2.3", "serviceAccountName": "default"}})
		if i%64 == 0 {
			b, _ := json.Marshal(map[string]any{"kind": "PodList", "apiVersion": "v1", "items": items})
			if len(b) >= 1<<20 {
				return b
			}
		}
	}
}()

// httpUpstream serves GET /bytes?n=N (N zero bytes), GET /list (the 1 MiB
// JSON list) and POST /sink (reads the body, answers "ok").
func httpUpstream() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.Header().Set("Content-Type", "application/octet-stream")
		for n > 0 {
			k, err := w.Write(zeros[:min(n, chunk)])
			if err != nil {
				return
			}
			n -= int64(k)
		}
	})
	mux.HandleFunc("GET /list", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(listJSON)))
		io.Copy(w, bytes.NewReader(listJSON))
	})
	mux.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	})
	return mux
}
