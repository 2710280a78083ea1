package guard

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/test/oidc"
)

const (
	tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	audience = "6dae42f8-4368-4678-94ff-3960e28e3630"
)

type handlerEnv struct {
	issuer  *oidc.Issuer
	ts      *httptest.Server
	relay   *fakeRelay
	metrics *Metrics
}

func newHandlerEnv(t *testing.T) *handlerEnv {
	t.Helper()
	iss, err := oidc.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(iss.CAPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	reg := prometheus.NewRegistry()
	v, err := entra.NewVerifier(&entra.Config{IssuerURL: iss.URL, V1IssuerURL: iss.V1Base(), Tenants: []string{tenant}, Audiences: []string{audience},
		HTTPClient: &http.Client{Transport: tr, Timeout: 5 * time.Second}, Metrics: entra.NewMetrics(reg, "guard")})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil)
	h, err := NewHandler(Config{Verifier: v, Authorizer: e.a, Metrics: e.metrics})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(h)
	t.Cleanup(ts.Close)
	return &handlerEnv{issuer: iss, ts: ts, relay: e.relay, metrics: e.metrics}
}

func (e *handlerEnv) post(t *testing.T, path string, body any) (int, []byte) {
	t.Helper()
	b, ok := body.([]byte)
	if !ok {
		b, _ = json.Marshal(body)
	}
	resp, err := e.ts.Client().Post(e.ts.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (e *handlerEnv) review(t *testing.T, tok string) authnv1.TokenReview {
	t.Helper()
	code, b := e.post(t, TokenReviewPath, authnv1.TokenReview{
		TypeMeta: metaTR, Spec: authnv1.TokenReviewSpec{Token: tok, Audiences: []string{"https://kubernetes.default.svc"}},
	})
	if code != 200 {
		t.Fatalf("HTTP %d: %s", code, b)
	}
	var r authnv1.TokenReview
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.APIVersion != TokenReviewAPIVersion || r.Kind != TokenReviewKind {
		t.Errorf("response type %s %s", r.APIVersion, r.Kind)
	}
	return r
}

var (
	metaTR  = typeMeta(TokenReviewAPIVersion, TokenReviewKind)
	metaSAR = typeMeta(SubjectAccessReviewAPIVersion, SubjectAccessReviewKind)
)

func TestTokenReview(t *testing.T) {
	e := newHandlerEnv(t)
	for _, ver := range []int{1, 2} {
		tok := e.issuer.MustMint(oidc.Token{Version: ver, Tenant: tenant, Audience: audience, UPN: "alice@contoso.example", OID: "oid-alice", Groups: []string{"g1", "g2"}})
		r := e.review(t, tok)
		u := r.Status.User
		if !r.Status.Authenticated || r.Status.Error != "" || u.Username != "alice@contoso.example" || u.UID != "oid-alice" ||
			!slices.Equal(u.Groups, []string{"g1", "g2"}) ||
			!slices.Equal(u.Extra["oid"], authnv1.ExtraValue{"oid-alice"}) || !slices.Equal(u.Extra["tid"], authnv1.ExtraValue{tenant}) {
			t.Errorf("v%d: %+v", ver, r.Status)
		}
	}
	for name, tc := range map[string]struct {
		tok, err string
	}{
		"expired":        {e.issuer.MustMint(oidc.Token{Tenant: tenant, Audience: audience, UPN: "a@b", OID: "o", TTL: -time.Hour}), "expired"},
		"wrong audience": {e.issuer.MustMint(oidc.Token{Tenant: tenant, Audience: "other-app", UPN: "a@b", OID: "o"}), "audience"},
		"other tenant":   {e.issuer.MustMint(oidc.Token{Tenant: "f8cdef31-a31e-4b4a-93e4-5f571e91255a", Audience: audience, UPN: "a@b", OID: "o"}), "unknown_issuer"},
		"alg none":       {e.issuer.MustMint(oidc.Token{Tenant: tenant, Audience: audience, UPN: "a@b", OID: "o", Alg: "none"}), "unsupported_algorithm"},
		"not a JWT":      {"opaque-service-account-token", "not a token of the configured Entra issuer"},
		"empty":          {"", "not a token"},
	} {
		r := e.review(t, tc.tok)
		if r.Status.Authenticated || !strings.Contains(r.Status.Error, tc.err) || r.Status.User.Username != "" {
			t.Errorf("%s: %+v", name, r.Status)
		}
		if strings.Contains(r.Status.Error, tc.tok) && tc.tok != "" && name != "not a JWT" {
			t.Errorf("%s: the error repeats the token", name)
		}
	}
	if got := testutil.ToFloat64(e.metrics.authn.WithLabelValues("authenticated")); got != 2 {
		t.Errorf("authenticated reviews %v", got)
	}
	if got := testutil.ToFloat64(e.metrics.authn.WithLabelValues("unauthenticated")); got != 6 {
		t.Errorf("unauthenticated reviews %v", got)
	}
}

func TestTokenReviewIssuerDown(t *testing.T) {
	e := newHandlerEnv(t)
	tok := e.issuer.MustMint(oidc.Token{Tenant: tenant, Audience: audience, UPN: "a@b", OID: "o"})
	e.issuer.Close()
	code, b := e.post(t, TokenReviewPath, authnv1.TokenReview{TypeMeta: metaTR, Spec: authnv1.TokenReviewSpec{Token: tok}})
	if code != http.StatusServiceUnavailable || !strings.Contains(string(b), `"kind":"Status"`) || !strings.Contains(string(b), "issuer_unavailable") {
		t.Errorf("HTTP %d: %s", code, b)
	}
}

func TestSubjectAccessReviewRoundTrip(t *testing.T) {
	e := newHandlerEnv(t)
	e.relay.allow("oid-a", api.ActionPrefix+"apps/deployments/write", "team-a")
	send := func(spec authzv1.SubjectAccessReviewSpec) authzv1.SubjectAccessReview {
		t.Helper()
		code, b := e.post(t, SubjectAccessReviewPath, authzv1.SubjectAccessReview{TypeMeta: metaSAR, Spec: spec})
		if code != 200 {
			t.Fatalf("HTTP %d: %s", code, b)
		}
		var r authzv1.SubjectAccessReview
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		if r.APIVersion != SubjectAccessReviewAPIVersion || r.Kind != SubjectAccessReviewKind {
			t.Errorf("response type %s %s", r.APIVersion, r.Kind)
		}
		return r
	}
	extra := map[string]authzv1.ExtraValue{"oid": {"oid-a"}, "tid": {tenant}}
	r := send(authzv1.SubjectAccessReviewSpec{User: "alice", UID: "oid-a", Groups: []string{"system:authenticated"}, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{Namespace: "team-a", Verb: "create", Group: "apps", Version: "v1", Resource: "deployments"}})
	if !r.Status.Allowed || r.Status.Denied {
		t.Errorf("create deployment: %+v", r.Status)
	}
	r = send(authzv1.SubjectAccessReviewSpec{User: "alice", Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{Namespace: "team-a", Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "rolebindings"}})
	if r.Status.Allowed || !r.Status.Denied || !strings.Contains(r.Status.Reason, "rbac.authorization.k8s.io/rolebindings/write") {
		t.Errorf("create rolebinding: %+v", r.Status)
	}
	// The wire form the apiserver sends, by hand: no group for core,
	// version "*", extra and uid only when set.
	code, b := e.post(t, SubjectAccessReviewPath, []byte(`{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","metadata":{"creationTimestamp":null},
		"spec":{"resourceAttributes":{"namespace":"team-a","verb":"get","version":"*","resource":"pods","subresource":"log"},"user":"sa","groups":["system:authenticated"]},"status":{"allowed":false}}`))
	if code != 200 || !strings.Contains(string(b), `"allowed":false`) || strings.Contains(string(b), `"denied":true`) {
		t.Errorf("no-oid review: HTTP %d %s", code, b)
	}
}

func TestBadReviews(t *testing.T) {
	e := newHandlerEnv(t)
	for _, tc := range []struct {
		path, body string
		code       int
	}{
		{SubjectAccessReviewPath, `{"apiVersion":"authorization.k8s.io/v1beta1","kind":"SubjectAccessReview","spec":{}}`, 400},
		{SubjectAccessReviewPath, `{"apiVersion":"authorization.k8s.io/v1","kind":"TokenReview"}`, 400},
		{SubjectAccessReviewPath, `not json`, 400},
		{TokenReviewPath, `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":5}}`, 400},
		{TokenReviewPath, `{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview"}`, 400},
		{"/other", `{}`, 404},
		{TokenReviewPath, `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"` + strings.Repeat("a", MaxReviewBytes) + `"}}`, 413},
	} {
		code, b := e.post(t, tc.path, []byte(tc.body))
		if code != tc.code {
			t.Errorf("%s %.80s: HTTP %d, want %d: %s", tc.path, tc.body, code, tc.code, b)
		}
	}
	resp, err := e.ts.Client().Get(e.ts.URL + SubjectAccessReviewPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: HTTP %d", resp.StatusCode)
	}
}

// A client that trickles a review's body is answered 408 once the body
// timeout passes, instead of holding the connection and a handler.
func TestTrickledReviewTimesOut(t *testing.T) {
	e := newEnv(t, nil)
	h, err := NewHandler(Config{Authorizer: e.a, BodyTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(h)
	defer ts.Close()
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte(`{"apiVersion":`))
	// Without the timeout nothing would answer: give up then (the
	// transport waits for the body, so end that too).
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+SubjectAccessReviewPath, pr)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("trickled review: %v, want a 408 before the client gives up", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "not received within 100ms") {
		t.Errorf("trickled review: HTTP %d %s", resp.StatusCode, b)
	}
}

func TestAuthnDisabled(t *testing.T) {
	e := newEnv(t, nil)
	h, _ := NewHandler(Config{Authorizer: e.a})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", TokenReviewPath, strings.NewReader(`{}`)))
	if rec.Code != 404 {
		t.Errorf("token review without a verifier: HTTP %d", rec.Code)
	}
	if _, err := NewHandler(Config{}); err == nil {
		t.Error("handler without an authorizer")
	}
}
