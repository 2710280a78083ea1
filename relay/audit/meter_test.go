package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

// transport is one way for a client to reach the relay's listener.
type transport struct {
	name  string
	h2    bool
	start func(http.Handler) *httptest.Server
	// dial opens a raw HTTP/1.1 connection (for upgrades); nil for HTTP/2.
	dial func(*httptest.Server) (net.Conn, error)
}

var transports = []transport{
	{name: "http1", start: httptest.NewServer, dial: func(s *httptest.Server) (net.Conn, error) {
		return net.Dial("tcp", s.Listener.Addr().String())
	}},
	{name: "tls-http1", start: httptest.NewTLSServer, dial: func(s *httptest.Server) (net.Conn, error) {
		cfg := s.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		return tls.Dial("tcp", s.Listener.Addr().String(), cfg)
	}},
	{name: "tls-h2", h2: true, start: func(h http.Handler) *httptest.Server {
		s := httptest.NewUnstartedServer(h)
		s.EnableHTTP2 = true
		s.StartTLS()
		return s
	}},
}

func forTransports(t *testing.T, upgrades bool, f func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		if upgrades && tr.dial == nil {
			continue
		}
		t.Run(tr.name, func(t *testing.T) { f(t, tr) })
	}
}

// relayFront is a metered httputil.ReverseProxy to upstream, as the relay
// runs it; each request's meter arrives on the channel once served.
func relayFront(t *testing.T, tr transport, upstream *httptest.Server, hooks func(*Metered)) (*httptest.Server, <-chan *Metered) {
	t.Helper()
	u, err := url.Parse(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	pt := &http.Transport{}
	t.Cleanup(pt.CloseIdleConnections)
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }, Transport: pt}
	served := make(chan *Metered, 1)
	front := tr.start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, mw, mr := Meter(w, r)
		if hooks != nil {
			hooks(m)
		}
		proxy.ServeHTTP(mw, mr)
		served <- m
	}))
	t.Cleanup(front.Close)
	return front, served
}

// echoUpstream switches to protocol "echo", echoes n bytes and closes.
func echoUpstream(t *testing.T, n int64) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		if err := brw.Flush(); err != nil {
			t.Error(err)
			return
		}
		if _, err := io.CopyN(conn, brw, n); err != nil {
			t.Errorf("upstream echo: %v", err)
		}
	}))
	t.Cleanup(up.Close)
	return up
}

func TestMeterUpgrade(t *testing.T) {
	forTransports(t, true, func(t *testing.T, tr transport) {
		payload := make([]byte, 200_003)
		rand.Read(payload)
		var mu sync.Mutex
		var start, end api.AuditRecord
		front, served := relayFront(t, tr, echoUpstream(t, int64(len(payload))), func(m *Metered) {
			m.OnHijack(func() { mu.Lock(); start = m.Fill(api.AuditRecord{Cluster: "prod"}); mu.Unlock() })
			m.OnClose(func() { mu.Lock(); end = m.Fill(api.AuditRecord{Cluster: "prod"}); mu.Unlock() })
		})
		conn, err := tr.dial(front)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second)) // lost bytes fail the read, not hang the test
		// The payload goes out with the request head, before the 101: the
		// server reads some of it ahead, and none of it may be lost.
		head := "GET /clusters/prod/api/v1/namespaces/ns/pods/p/exec HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
		wrote := make(chan error, 1)
		go func() {
			_, err := conn.Write(append([]byte(head), payload...))
			wrote <- err
		}()
		got, err := io.ReadAll(conn) // to the relay's half-close once the upstream is done
		if err != nil {
			t.Fatal(err)
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		conn.Close()
		m := <-served

		respHead, echoed, ok := bytes.Cut(got, []byte("\r\n\r\n"))
		if !ok || !bytes.HasPrefix(respHead, []byte("HTTP/1.1 101 ")) {
			t.Fatalf("answer starts %q, want a 101", got[:min(len(got), 200)])
		}
		if !bytes.Equal(echoed, payload) {
			t.Fatalf("echoed %d bytes, not the %d sent", len(echoed), len(payload))
		}
		if m.Status() != http.StatusSwitchingProtocols || !m.Hijacked() {
			t.Errorf("status %d, hijacked %v; want 101, true", m.Status(), m.Hijacked())
		}
		if m.BytesIn() != int64(len(payload)) {
			t.Errorf("BytesIn = %d, want the %d bytes sent after the request head", m.BytesIn(), len(payload))
		}
		if m.BytesOut() != int64(len(got)) {
			t.Errorf("BytesOut = %d, want the %d bytes the client received", m.BytesOut(), len(got))
		}
		select {
		case <-m.Done():
		default:
			t.Error("Done is not closed after the session")
		}
		mu.Lock()
		defer mu.Unlock()
		if start.Kind != api.AuditSession || start.Event != api.AuditStart || start.Status != 101 || start.Cluster != "prod" ||
			start.Method != "GET" || start.Path != "/clusters/prod/api/v1/namespaces/ns/pods/p/exec" || start.Client != "127.0.0.1" {
			t.Errorf("start record = %+v", start)
		}
		if end.Kind != api.AuditSession || end.Event != api.AuditEnd || end.BytesIn != m.BytesIn() || end.BytesOut != m.BytesOut() ||
			end.Time.Before(start.Time) || end.DurationMS <= 0 {
			t.Errorf("end record = %+v (start %+v)", end, start)
		}
	})
}

func TestMeterFlushStreams(t *testing.T) {
	forTransports(t, false, func(t *testing.T, tr transport) {
		next := make(chan struct{})
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, "first\n")
			http.NewResponseController(w).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
			io.WriteString(w, "second\n")
		}))
		defer up.Close()
		front, served := relayFront(t, tr, up, nil)
		// A response that was not flushed makes the first read fail here
		// rather than hang.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", front.URL+"/api/v1/pods?watch=true", nil)
		resp, err := front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if tr.h2 != (resp.ProtoMajor == 2) {
			t.Fatalf("protocol %s", resp.Proto)
		}
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != "first\n" {
			t.Fatalf("first line %q, %v: not streamed", line, err)
		}
		close(next)
		rest, err := io.ReadAll(br)
		if err != nil || string(rest) != "second\n" {
			t.Fatalf("rest %q, %v", rest, err)
		}
		m := <-served
		if m.Status() != http.StatusAccepted || m.BytesOut() != int64(len("first\nsecond\n")) || m.BytesIn() != 0 || m.Hijacked() {
			t.Errorf("status %d, out %d, in %d, hijacked %v; want 202, 13, 0, false", m.Status(), m.BytesOut(), m.BytesIn(), m.Hijacked())
		}
		if rec := m.Fill(api.AuditRecord{}); rec.Kind != api.AuditRequest || rec.Event != "" || rec.Status != 202 || rec.Path != "/api/v1/pods?watch=true" {
			t.Errorf("record = %+v", rec)
		}
	})
}

func TestMeterRequestBody(t *testing.T) {
	forTransports(t, false, func(t *testing.T, tr transport) {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			if n != 50_000 {
				http.Error(w, "short body", http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "stored")
		}))
		defer up.Close()
		front, served := relayFront(t, tr, up, nil)
		resp, err := front.Client().Post(front.URL+"/api/v1/namespaces/ns/configmaps", "application/json", bytes.NewReader(make([]byte, 50_000)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := <-served
		if resp.StatusCode != 201 || m.Status() != 201 || m.BytesIn() != 50_000 || m.BytesOut() != int64(len(body)) || len(body) != len("stored") {
			t.Errorf("answer %d %q; meter status %d, in %d, out %d", resp.StatusCode, body, m.Status(), m.BytesIn(), m.BytesOut())
		}
	})
}

// What the server's writer offers still reaches it through the meter:
// deadlines and full duplex through Unwrap, Hijack where the protocol has
// it and http.ErrNotSupported where it has not.
func TestMeterResponseController(t *testing.T) {
	forTransports(t, false, func(t *testing.T, tr transport) {
		errs := make(chan error, 1)
		front := tr.start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m, mw, _ := Meter(w, r)
			rc := http.NewResponseController(mw)
			err := errors.Join(rc.SetReadDeadline(time.Now().Add(time.Minute)), rc.SetWriteDeadline(time.Now().Add(time.Minute)))
			if !tr.h2 {
				err = errors.Join(err, rc.EnableFullDuplex()) // HTTP/2 is always full duplex
			}
			conn, brw, herr := rc.Hijack()
			switch {
			case tr.h2 && !errors.Is(herr, http.ErrNotSupported):
				err = errors.Join(err, errors.New("Hijack on HTTP/2 did not fail with ErrNotSupported"), herr)
			case !tr.h2 && herr != nil:
				err = errors.Join(err, herr)
			case !tr.h2:
				brw.WriteString("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
				err = errors.Join(err, brw.Flush(), conn.Close())
				if m.BytesOut() == 0 || !m.Hijacked() {
					err = errors.Join(err, errors.New("a hijacked conn's writes were not counted"))
				}
			default:
				mw.WriteHeader(http.StatusNoContent)
			}
			errs <- err
		}))
		defer front.Close()
		resp, err := front.Client().Get(front.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if err := <-errs; err != nil {
			t.Error(err)
		}
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
}

func TestMeterStatus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter)
		want  int
		fill  int
	}{
		{"nothing written", func(http.ResponseWriter) {}, 0, 200},
		{"write", func(w http.ResponseWriter) { io.WriteString(w, "x") }, 200, 200},
		{"header", func(w http.ResponseWriter) { w.WriteHeader(404); w.WriteHeader(500) }, 404, 404},
		{"early hints first", func(w http.ResponseWriter) { w.WriteHeader(103); w.WriteHeader(429) }, 429, 429},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/x?y=1", nil)
			m, w, _ := Meter(httptest.NewRecorder(), r)
			tc.serve(w)
			if m.Status() != tc.want {
				t.Errorf("Status() = %d, want %d", m.Status(), tc.want)
			}
			if got := m.Fill(api.AuditRecord{}).Status; got != tc.fill {
				t.Errorf("Fill status = %d, want %d", got, tc.fill)
			}
		})
	}
	// A status set by the caller (a refusal) wins over the meter's.
	m, w, _ := Meter(httptest.NewRecorder(), httptest.NewRequest("GET", "/", strings.NewReader("")))
	w.WriteHeader(200)
	if got := m.Fill(api.AuditRecord{Status: 429, Reason: api.ReasonCallerLimited}); got.Status != 429 {
		t.Errorf("Fill overrode the record's status: %d", got.Status)
	}
}
