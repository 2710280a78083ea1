package aadproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/pkg/entra"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var alice = &entra.Identity{Username: "alice@example.com", Groups: []string{"g-1", "g-2"}, ObjectID: "oid-1", TenantID: "tid-1"}

func TestRewriteHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   http.Header
		id   *entra.Identity
		keep bool // a pass-through token's own impersonation
		want http.Header
	}{{
		name: "identity: authorization replaced by impersonation",
		in:   http.Header{"Authorization": {"Bearer entra"}, "Accept": {"application/json"}, "User-Agent": {"kubectl"}},
		id:   alice,
		want: http.Header{"Accept": {"application/json"}, "User-Agent": {"kubectl"},
			"Impersonate-User": {"alice@example.com"}, "Impersonate-Group": {"g-1", "g-2", "system:authenticated"},
			"Impersonate-Extra-Oid": {"oid-1"}, "Impersonate-Extra-Tid": {"tid-1"}},
	}, {
		name: "identity: client impersonation and front-proxy headers dropped",
		in: http.Header{"Authorization": {"Bearer entra"}, "Impersonate-User": {"admin"}, "Impersonate-Group": {"system:masters"},
			"Impersonate-Uid": {"0"}, "Impersonate-Extra-Scopes": {"all"}, "X-Remote-User": {"admin"}, "X-Remote-Group": {"system:masters"}},
		id: alice,
		want: http.Header{"Impersonate-User": {"alice@example.com"}, "Impersonate-Group": {"g-1", "g-2", "system:authenticated"},
			"Impersonate-Extra-Oid": {"oid-1"}, "Impersonate-Extra-Tid": {"tid-1"}},
	}, {
		name: "identity without groups",
		in:   http.Header{"Authorization": {"Bearer entra"}},
		id:   &entra.Identity{Username: "bob", ObjectID: "o", TenantID: "t"},
		want: http.Header{"Impersonate-User": {"bob"}, "Impersonate-Group": {"system:authenticated"},
			"Impersonate-Extra-Oid": {"o"}, "Impersonate-Extra-Tid": {"t"}},
	}, {
		name: "pass-through keeps authorization, drops impersonation",
		in:   http.Header{"Authorization": {"Bearer sa-token"}, "Impersonate-User": {"admin"}, "Content-Type": {"application/json"}},
		want: http.Header{"Authorization": {"Bearer sa-token"}, "Content-Type": {"application/json"}},
	}, {
		name: "identity: client impersonation dropped even when kept for pass-through",
		in:   http.Header{"Authorization": {"Bearer entra"}, "Impersonate-User": {"admin"}},
		id:   alice,
		keep: true,
		want: http.Header{"Impersonate-User": {"alice@example.com"}, "Impersonate-Group": {"g-1", "g-2", "system:authenticated"},
			"Impersonate-Extra-Oid": {"oid-1"}, "Impersonate-Extra-Tid": {"tid-1"}},
	}, {
		name: "pass-through token keeps its impersonation, drops front-proxy and unknown headers",
		in: http.Header{"Authorization": {"Bearer sa-token"}, "Impersonate-User": {"admin"}, "Impersonate-Group": {"system:masters", "ops"},
			"Impersonate-Uid": {"0"}, "Impersonate-Extra-Scopes": {"all"}, "Impersonate-Extra-": {"x"}, "Impersonate-Other": {"x"},
			"X-Remote-User": {"admin"}},
		keep: true,
		want: http.Header{"Authorization": {"Bearer sa-token"}, "Impersonate-User": {"admin"}, "Impersonate-Group": {"system:masters", "ops"},
			"Impersonate-Uid": {"0"}, "Impersonate-Extra-Scopes": {"all"}},
	}, {
		name: "non-canonical header names are caught",
		in:   http.Header{"impersonate-user": {"admin"}, "IMPERSONATE-GROUP": {"x"}, "x-remote-extra-a": {"b"}},
		want: http.Header{},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.in.Clone()
			rewriteHeaders(h, tc.id, tc.keep)
			// Extra header names are set raw (percent-encoded keys), so
			// compare canonicalised.
			got := http.Header{}
			for k, v := range h {
				got[http.CanonicalHeaderKey(k)] = v
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("headers:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestExtraKeyIsPercentEncoded(t *testing.T) {
	h := http.Header{}
	rewriteHeaders(h, &entra.Identity{Username: "u", ObjectID: "o", TenantID: "t"}, false)
	if _, ok := h["Impersonate-Extra-oid"]; !ok {
		t.Errorf("want the extra key as sent to the apiserver (lowercase oid), got %v", h)
	}
}

func TestVerb(t *testing.T) {
	for _, tc := range []struct{ method, url, want string }{
		{"GET", "/api/v1/pods", "list"},
		{"GET", "/api/v1/namespaces/ns/pods", "list"},
		{"GET", "/api/v1/namespaces/ns/pods/p", "get"},
		{"GET", "/api/v1/namespaces/ns/pods/p/log", "get"},
		{"GET", "/api/v1/namespaces", "list"},
		{"GET", "/api/v1/namespaces/ns", "get"},
		{"GET", "/apis/apps/v1/namespaces/ns/deployments?watch=true", "watch"},
		{"GET", "/apis/apps/v1/deployments?watch=1", "watch"},
		{"GET", "/version", "get"},
		{"GET", "/api", "get"},
		{"POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", "create"},
		{"POST", "/api/v1/namespaces/ns/pods/p/exec?command=sh", "create"},
		{"PUT", "/api/v1/namespaces/ns/configmaps/c", "update"},
		{"PATCH", "/api/v1/namespaces/ns/configmaps/c", "patch"},
		{"DELETE", "/api/v1/namespaces/ns/configmaps/c", "delete"},
		{"DELETE", "/api/v1/namespaces/ns/configmaps", "deletecollection"},
		{"OPTIONS", "/api", "options"},
	} {
		r := httptest.NewRequest(tc.method, tc.url, nil)
		if got := verb(r); got != tc.want {
			t.Errorf("%s %s: verb %q, want %q", tc.method, tc.url, got, tc.want)
		}
	}
}

// stubVerifier maps tokens to results.
type stubVerifier map[string]struct {
	id  *entra.Identity
	err error
}

func (s stubVerifier) Verify(_ context.Context, raw string) (*entra.Identity, error) {
	r, ok := s[raw]
	if !ok {
		return nil, entra.ErrNotEntra
	}
	return r.id, r.err
}

// upstream is a stand-in apiserver that echoes the auth headers it got.
func upstream(t *testing.T) (*httptest.Server, *rest.Config) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := map[string]any{"path": r.URL.Path, "authorization": r.Header.Get("Authorization"), "xff": r.Header.Values("X-Forwarded-For")}
		for k, v := range r.Header {
			if strings.HasPrefix(k, "Impersonate-") {
				out[k] = v
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	cfg := &rest.Config{Host: srv.URL, BearerToken: "proxy-own-token", TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	return srv, cfg
}

type seen struct {
	Path          string   `json:"path"`
	Authorization string   `json:"authorization"`
	XFF           []string `json:"xff"`
	User          []string `json:"Impersonate-User"`
	Group         []string `json:"Impersonate-Group"`
	UID           []string `json:"Impersonate-Uid"`
	ExtraScopes   []string `json:"Impersonate-Extra-Scopes"`
}

func newProxy(t *testing.T, v Verifier, logs io.Writer) (*Proxy, *prometheus.Registry) {
	_, cfg := upstream(t)
	reg := prometheus.NewRegistry()
	p, err := New(Config{Verifier: v, Upstream: cfg, Registry: reg, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return p, reg
}

func do(t *testing.T, p http.Handler, auth string, hdr http.Header) (*httptest.ResponseRecorder, seen, metav1.Status) {
	t.Helper()
	r := httptest.NewRequest("GET", "/api/v1/namespaces/ns/pods", nil)
	for k, v := range hdr {
		r.Header[k] = v
	}
	if auth != "" {
		r.Header.Set("Authorization", "Bearer "+auth)
	}
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	var s seen
	var st metav1.Status
	if w.Code == 200 {
		json.Unmarshal(w.Body.Bytes(), &s)
	} else {
		json.Unmarshal(w.Body.Bytes(), &st)
	}
	return w, s, st
}

func TestProxy(t *testing.T) {
	v := stubVerifier{
		"entra-alice":   {id: alice},
		"entra-expired": {err: &entra.Error{Reason: entra.ReasonExpired, Err: io.EOF}},
		"entra-down":    {err: &entra.Error{Reason: entra.ReasonIssuerUnavailable, Err: io.EOF}},
	}
	var logs bytes.Buffer
	p, reg := newProxy(t, v, &logs)

	w, s, _ := do(t, p, "entra-alice", nil)
	if w.Code != 200 || s.Authorization != "Bearer proxy-own-token" || !reflect.DeepEqual(s.User, []string{"alice@example.com"}) ||
		!reflect.DeepEqual(s.Group, []string{"g-1", "g-2", "system:authenticated"}) || s.Path != "/api/v1/namespaces/ns/pods" {
		t.Errorf("Entra user: %d %+v", w.Code, s)
	}
	w, s, _ = do(t, p, "sa-token", nil)
	if w.Code != 200 || s.Authorization != "Bearer sa-token" || s.User != nil {
		t.Errorf("pass-through: %d %+v", w.Code, s)
	}
	w, s, _ = do(t, p, "", nil)
	if w.Code != 200 || s.Authorization != "" || s.User != nil {
		t.Errorf("anonymous must not get the proxy's credentials: %d %+v", w.Code, s)
	}
	w, _, st := do(t, p, "entra-expired", nil)
	if w.Code != 401 || st.Reason != metav1.StatusReasonUnauthorized || !strings.Contains(st.Message, "(expired)") {
		t.Errorf("expired: %d %+v", w.Code, st)
	}
	w, _, st = do(t, p, "entra-down", nil)
	if w.Code != 503 || !strings.Contains(st.Message, "issuer_unavailable") {
		t.Errorf("issuer down: %d %+v", w.Code, st)
	}
	for _, auth := range []string{"entra-alice", ""} {
		w, _, st = do(t, p, auth, http.Header{"Impersonate-User": {"admin"}, "Impersonate-Group": {"system:masters"}})
		if w.Code != 403 || st.Reason != metav1.StatusReasonForbidden || !strings.Contains(st.Message, "Impersonate-Group, Impersonate-User") {
			t.Errorf("impersonation with %q: %d %+v", auth, w.Code, st)
		}
	}

	for code, want := range map[string]float64{"200": 3, "401": 1, "503": 1, "403": 2} {
		if got := testutil.ToFloat64(p.requests.WithLabelValues(code)); got != want {
			t.Errorf("requests_total{code=%s} = %v, want %v", code, got, want)
		}
	}
	if n, _ := testutil.GatherAndCount(reg, "aadproxy_impersonation_attempts_total"); n != 1 {
		t.Errorf("impersonation metric not registered")
	}
	out := logs.String()
	if strings.Count(out, "msg=request ") != 7 {
		t.Errorf("want one audit line per request (7):\n%s", out)
	}
	for _, want := range []string{
		`mode=impersonate user=alice@example.com groups=2 verb=list path=/api/v1/namespaces/ns/pods status=200`,
		`mode=passthrough user="" groups=0 verb=list`,
		`mode=rejected user="" groups=0 verb=list path=/api/v1/namespaces/ns/pods status=401 latency=`,
		`reason=expired`,
		`refused a request carrying impersonation headers`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{"entra-alice", "sa-token", "proxy-own-token"} {
		if strings.Contains(out, secret) {
			t.Errorf("a token (%s) appears in the logs", secret)
		}
	}
}

// Impersonation in token mode: a pass-through token's Impersonate-* go to
// the apiserver, which authorizes them by RBAC; an Entra user's are refused
// (the proxy impersonates the user itself), as are those of a request
// without a token.
func TestClientImpersonation(t *testing.T) {
	v := stubVerifier{"entra-alice": {id: alice}}
	var logs bytes.Buffer
	p, _ := newProxy(t, v, &logs)
	imp := http.Header{"Impersonate-User": {"admin"}, "Impersonate-Group": {"system:masters"}, "Impersonate-Uid": {"0"},
		"Impersonate-Extra-Scopes": {"all"}, "X-Remote-User": {"root"}}

	w, s, _ := do(t, p, "sa-token", imp)
	if w.Code != 200 || s.Authorization != "Bearer sa-token" || !reflect.DeepEqual(s.User, []string{"admin"}) ||
		!reflect.DeepEqual(s.Group, []string{"system:masters"}) || !reflect.DeepEqual(s.UID, []string{"0"}) ||
		!reflect.DeepEqual(s.ExtraScopes, []string{"all"}) {
		t.Errorf("pass-through token's impersonation: %d %+v", w.Code, s)
	}
	if !strings.Contains(logs.String(), "mode=passthrough") || !strings.Contains(logs.String(), "impersonation=Impersonate-Extra-Scopes,Impersonate-Group,Impersonate-Uid,Impersonate-User") {
		t.Errorf("the audit line does not say the client impersonated:\n%s", logs.String())
	}

	w, _, st := do(t, p, "entra-alice", imp)
	if w.Code != 403 || st.Reason != metav1.StatusReasonForbidden || !strings.Contains(st.Message, "for Entra users") ||
		!strings.Contains(st.Message, "already impersonates alice@example.com") {
		t.Errorf("Entra user's impersonation: %d %+v", w.Code, st)
	}
	w, _, st = do(t, p, "", imp)
	if w.Code != 403 || !strings.Contains(st.Message, "without a bearer token") {
		t.Errorf("impersonation without a token: %d %+v", w.Code, st)
	}
	if got := testutil.ToFloat64(p.refused); got != 2 {
		t.Errorf("impersonation refusals = %v, want 2", got)
	}
}

// The X-Forwarded-For the relay sets reaches the apiserver, with the
// proxy's peer (the agent) appended, for Entra users and pass-through
// tokens alike.
func TestXForwardedFor(t *testing.T) {
	p, _ := newProxy(t, stubVerifier{"entra-alice": {id: alice}}, io.Discard)
	for _, auth := range []string{"entra-alice", "sa-token", ""} {
		_, s, _ := do(t, p, auth, http.Header{"X-Forwarded-For": {"203.0.113.7"}})
		if !reflect.DeepEqual(s.XFF, []string{"203.0.113.7, 192.0.2.1"}) { // httptest's RemoteAddr
			t.Errorf("%q: the apiserver got X-Forwarded-For %q, want the client's and the agent's", auth, s.XFF)
		}
		_, s, _ = do(t, p, auth, nil)
		if !reflect.DeepEqual(s.XFF, []string{"192.0.2.1"}) {
			t.Errorf("%q without X-Forwarded-For: the apiserver got %q, want the agent's", auth, s.XFF)
		}
	}
}

func TestNewRefusesImpersonatingUpstream(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1", Impersonate: rest.ImpersonationConfig{UserName: "x"}}
	if _, err := New(Config{Verifier: stubVerifier{}, Upstream: cfg}); err == nil {
		t.Fatal("an upstream config that impersonates was accepted")
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := NewOptions()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	o.Flags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	want := &Options{
		Listen:       ":8443",
		HealthListen: ":8081",
		Token: entra.Options{
			IssuerURL:      "https://login.microsoftonline.com",
			V1IssuerURL:    "https://sts.windows.net",
			Algorithms:     []string{"RS256"},
			ClockSkew:      time.Minute,
			JWKSMinRefresh: 5 * time.Second,
			UsernameClaims: []string{"upn", "preferred_username", "oid"},
		},
		GraphURL:        "https://graph.microsoft.com",
		GroupsCacheTTL:  5 * time.Minute,
		ShutdownTimeout: 15 * time.Second,
	}
	want.Log = o.Log
	if !reflect.DeepEqual(o, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", o, want)
	}
	if o.Log.Level != "info" || o.Log.Format != "text" {
		t.Errorf("log defaults %+v", o.Log)
	}
	// The defaults lack what has no sensible default.
	err := o.Validate()
	for _, want := range []string{"--tls-cert-file", "--tenant", "--audience"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate of the defaults should ask for %s: %v", want, err)
		}
	}
}

func TestOptionsFlags(t *testing.T) {
	o := NewOptions()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	o.Flags(fs)
	err := fs.Parse([]string{"--tls-cert-file=c", "--tls-key-file=k", "--tenant=t1,t2", "--tenant=t3",
		"--audience=api://x", "--username-claim=email", "--signing-algs=RS256,ES256"})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o.Token.Tenants, []string{"t1", "t2", "t3"}) || !reflect.DeepEqual(o.Token.UsernameClaims, []string{"email"}) ||
		!reflect.DeepEqual(o.Token.Algorithms, []string{"RS256", "ES256"}) {
		t.Errorf("parsed %+v", o)
	}
	o.ClientID = "app"
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--client-secret-file") {
		t.Errorf("client id without secret: %v", err)
	}
}

func TestIsUpgrade(t *testing.T) {
	for _, tc := range []struct {
		h    http.Header
		want bool
	}{
		{http.Header{"Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1"}}, true},
		{http.Header{"Connection": {"keep-alive, upgrade"}, "Upgrade": {"websocket"}}, true},
		{http.Header{"Connection": {"close"}, "Upgrade": {"websocket"}}, false},
		{http.Header{"Connection": {"Upgrade"}}, false},
		{http.Header{}, false},
	} {
		if got := isUpgrade(tc.h); got != tc.want {
			t.Errorf("isUpgrade(%v) = %v", tc.h, got)
		}
	}
}
