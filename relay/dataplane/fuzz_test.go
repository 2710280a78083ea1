package dataplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newPlane(t testing.TB) *Plane {
	t.Helper()
	p, err := New(Config{Registered: func(context.Context, string) (bool, error) { return true, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// route passes r through a mux with the relay's data-path patterns and
// returns it as the door's handler gets it (path values set), or nil when
// the mux would not call the handler (a redirect to a cleaned path, say).
func route(r *http.Request) *http.Request {
	var got *http.Request
	h := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r })
	mux := http.NewServeMux()
	mux.Handle(api.ClusterProxyPrefix+"{name}", h)
	mux.Handle(api.ClusterProxyPrefix+"{name}/{path...}", h)
	mux.ServeHTTP(httptest.NewRecorder(), r)
	return got
}

// escapeSome percent-encodes the bytes of s whose bit is set in mask, as a
// client may (%2D for '-', %61 for 'a'): the mux unescapes the segment, so
// the name the door is given is the same.
func escapeSome(s string, mask uint64) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if mask>>(i%64)&1 == 1 {
			fmt.Fprintf(&b, "%%%02X", s[i])
		} else {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// afterSegments returns what follows the first n segments of an escaped
// path ("" when nothing does).
func afterSegments(escaped string, n int) string {
	rest := escaped
	for range n {
		i := strings.IndexByte(rest[1:], '/')
		if i < 0 {
			return ""
		}
		rest = rest[1+i:]
	}
	return rest
}

// proxyRequest is what ReverseProxy hands Rewrite for in, after
// ServeCluster put the target into in's context: Out a clone of In without
// the forwarding headers the client may have forged.
func proxyRequest(in *http.Request, name, prefix string) *httputil.ProxyRequest {
	ctx := context.WithValue(in.Context(), targetKey{}, target{cluster: name, prefix: prefix})
	in = in.WithContext(ctx)
	out := in.Clone(ctx)
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		out.Header.Del(h)
	}
	return &httputil.ProxyRequest{In: in, Out: out}
}

// checkOut checks the rewritten request of in for cluster name: addressed
// to the cluster, the first two segments (/clusters/<name>) gone and the
// rest as the client escaped it, and X-Forwarded-For the address the relay
// saw, whatever the client sent.
func checkOut(t *testing.T, in, out *http.Request, name string) {
	t.Helper()
	if out.URL.Host != name || out.Host != name || out.URL.Scheme != "http" {
		t.Errorf("%s: out URL %s://%s, Host %q; want http://%s", in.URL, out.URL.Scheme, out.URL.Host, out.Host, name)
	}
	wantEscaped := afterSegments(in.URL.EscapedPath(), 2)
	if wantEscaped == "" {
		wantEscaped = "/"
	}
	wantPath, err := url.PathUnescape(wantEscaped)
	if err != nil {
		t.Fatalf("%s: escaped path %q: %v", in.URL, wantEscaped, err)
	}
	if !strings.HasPrefix(out.URL.Path, "/") {
		t.Errorf("%s: out path %q does not start with /", in.URL, out.URL.Path)
	}
	if out.URL.Path != wantPath {
		t.Errorf("%s (cluster %q): out path %q, want %q", in.URL, name, out.URL.Path, wantPath)
	}
	if got := out.URL.EscapedPath(); got != wantEscaped {
		t.Errorf("%s (cluster %q): out escaped path %q, want %q (the client's escaping)", in.URL, name, got, wantEscaped)
	}
	if out.URL.RawPath != "" {
		if p, err := url.PathUnescape(out.URL.RawPath); err != nil || p != out.URL.Path {
			t.Errorf("%s: out RawPath %q unescapes to %q (%v), Path is %q", in.URL, out.URL.RawPath, p, err, out.URL.Path)
		}
	}
	var want []string
	if h, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		want = []string{h}
	}
	if got := out.Header.Values("X-Forwarded-For"); !slices.Equal(got, want) {
		t.Errorf("remote %q, client sent X-Forwarded-For %q: out X-Forwarded-For %q, want %q", in.RemoteAddr, in.Header.Values("X-Forwarded-For"), got, want)
	}
	for _, h := range []string{"Forwarded", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v := out.Header.Values(h); len(v) > 0 {
			t.Errorf("out %s: %q, want none", h, v)
		}
	}
}

// inbound is a request for target as the server parses it, with forged
// forwarding headers.
func inbound(target, remote, forged string) (*http.Request, error) {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, err
	}
	return &http.Request{
		Method: http.MethodGet, URL: u, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Host: "relay.example", RemoteAddr: remote, Body: http.NoBody,
		Header: http.Header{
			"X-Forwarded-For":   {forged},
			"Forwarded":         {"for=" + forged},
			"X-Forwarded-Host":  {forged},
			"X-Forwarded-Proto": {"https"},
			"Authorization":     {"Bearer sa-token"},
		},
	}, nil
}

// FuzzRewrite feeds rewrite requests for /clusters/<name><rest> as the mux
// routes them, the name's bytes escaped or not, with forged forwarding
// headers.
func FuzzRewrite(f *testing.F) {
	for _, s := range []struct {
		name   string
		escape uint64
		rest   string
		remote string
		forged string
	}{
		{"prod", 0, "/api/v1/namespaces/default/pods", "192.0.2.10:51000", "203.0.113.66"},
		{"prod", 0, "", "192.0.2.10:51000", "203.0.113.66"},
		{"prod", 0, "/", "[2001:db8::1]:443", "203.0.113.66, 10.0.0.1"},
		{"prod", 0, "/api/v1/namespaces/a%2Fb/pods", "192.0.2.10:1", ""},
		{"prod", 0, "/api/v1/namespaces/default/pods/x%20y", "192.0.2.10:1", "1.2.3.4"},
		{"prod", 0, "/clusters/prod/api", "192.0.2.10:1", "1.2.3.4"},
		{"prod", 0, "/apis/x/v1?watch=1&x=%2F", "192.0.2.10:1", "1.2.3.4"},
		{"prod", 0, "/%E2%82%AC/%7e", "192.0.2.10:1", "1.2.3.4"},
		{"p-1", 0, "/api", "no-port", "1.2.3.4"},
		{"a", 0, "//x", "192.0.2.10:1", ""},
	} {
		f.Add(s.name, s.escape, s.rest, s.remote, s.forged)
	}
	p := newPlane(f)
	f.Fuzz(func(t *testing.T, name string, escape uint64, rest, remote, forged string) {
		if !api.ValidClusterName(name) {
			return
		}
		in, err := inbound(api.ClusterProxyPrefix+escapeSome(name, escape)+rest, remote, forged)
		if err != nil {
			return
		}
		in = route(in)
		if in == nil || !api.ValidClusterName(in.PathValue("name")) {
			return // not for the data path, or ServeCluster answers 404
		}
		name = in.PathValue("name")
		pr := proxyRequest(in, name, api.ClusterProxyPrefix+name)
		p.rewrite(pr)
		checkOut(t, pr.In, pr.Out, name)
	})
}

type recorder struct{ got []*http.Request }

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.got = append(r.got, req)
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok")), Request: req}, nil
}

// TestServeClusterRewrites goes through ServeCluster and the real
// ReverseProxy (a recording transport in place of the tunnels), so that
// proxyRequest above is known to build what the proxy builds: the forged
// forwarding headers are gone before rewrite adds its own.
func TestServeClusterRewrites(t *testing.T) {
	p := newPlane(t)
	rt := &recorder{}
	p.proxy.Transport = rt
	for _, tc := range []struct{ target, wantEscaped string }{
		{"/clusters/prod/api/v1/pods", "/api/v1/pods"},
		{"/clusters/prod", "/"},
		{"/clusters/prod/", "/"},
		{"/clusters/prod/api/v1/namespaces/a%2Fb/pods", "/api/v1/namespaces/a%2Fb/pods"},
		{"/clusters/prod/clusters/prod/x", "/clusters/prod/x"},
		{"/clusters/prod/api?watch=1", "/api"},
	} {
		in, err := inbound(tc.target, "192.0.2.10:51000", "203.0.113.66")
		if err != nil {
			t.Fatal(err)
		}
		in = route(in)
		name := in.PathValue("name")
		w := httptest.NewRecorder()
		p.ServeCluster(w, in, name, api.ClusterProxyPrefix+name, Caller{})
		if w.Code != http.StatusOK || len(rt.got) == 0 {
			t.Fatalf("%s: %d %s", tc.target, w.Code, w.Body)
		}
		out := rt.got[len(rt.got)-1]
		checkOut(t, in, out, name)
		if got := out.URL.EscapedPath(); got != tc.wantEscaped {
			t.Errorf("%s: upstream path %q, want %q", tc.target, got, tc.wantEscaped)
		}
		if got := out.Header.Get("Authorization"); got != "Bearer sa-token" {
			t.Errorf("%s: Authorization %q, want it passed on", tc.target, got)
		}
	}
	p.tr.CloseIdleConnections()
}

// TestRewriteHostMode: with no prefix (the cluster named by the host), the
// whole path goes to the cluster.
func TestRewriteHostMode(t *testing.T) {
	p := newPlane(t)
	in, err := inbound("/clusters/prod/api/v1/a%2Fb", "192.0.2.10:51000", "203.0.113.66")
	if err != nil {
		t.Fatal(err)
	}
	pr := proxyRequest(in, "prod", "")
	p.rewrite(pr)
	if got, want := pr.Out.URL.EscapedPath(), "/clusters/prod/api/v1/a%2Fb"; got != want || pr.Out.URL.Host != "prod" {
		t.Errorf("host mode: out %s%s, want prod%s", pr.Out.URL.Host, got, want)
	}
}
