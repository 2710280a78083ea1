package guard

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authzv1 "k8s.io/api/authorization/v1"

	"github.com/clusterconnect/clusterconnect/guard/authz"
	"github.com/clusterconnect/clusterconnect/guard/cache"
	"github.com/clusterconnect/clusterconnect/guard/checkaccess"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
)

const p = api.ActionPrefix

// fakeRelay serves checkAccess from a table of allowed (oid or group,
// action, namespace) and can be told to fail.
type fakeRelay struct {
	ts *httptest.Server

	mu         sync.Mutex
	allowed    map[string]bool // principal|action|namespace
	code       int             // non-zero: answer with this status
	validUntil time.Time       // the answers' ValidUntil
	calls      []api.CheckAccessRequest
}

func newFakeRelay(t *testing.T) *fakeRelay {
	f := &fakeRelay{allowed: map[string]bool{}}
	f.ts = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.ts.Close)
	return f
}

func (f *fakeRelay) allow(principal, action, ns string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allowed[principal+"|"+action+"|"+ns] = true
}

func (f *fakeRelay) fail(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.code = code
}

func (f *fakeRelay) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeRelay) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != api.CheckAccessPath || r.Method != http.MethodPost {
		apistatus.Error(w, http.StatusNotFound, "no such path")
		return
	}
	var req api.CheckAccessRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		apistatus.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, req)
	if f.code != 0 {
		apistatus.Error(w, f.code, "relay says no")
		return
	}
	resp := api.CheckAccessResponse{ValidUntil: f.validUntil}
	for _, a := range req.Actions {
		d := api.Decision{Action: a, Reason: "no role assignment allows " + a}
		for _, pr := range append([]string{req.Subject.OID}, req.Subject.Groups...) {
			if f.allowed[pr+"|"+a+"|"+req.Namespace] {
				d.Allowed, d.Reason = true, "Viewer assigned to "+pr
			}
		}
		resp.Decisions = append(resp.Decisions, d)
	}
	json.NewEncoder(w).Encode(resp)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	relay   *fakeRelay
	clk     *clock
	a       *Authorizer
	metrics *Metrics
	reg     *prometheus.Registry
}

func newEnv(t *testing.T, mod func(*AuthorizerConfig)) *env {
	t.Helper()
	e := &env{relay: newFakeRelay(t), clk: &clock{t: time.Unix(1_000_000, 0)}, reg: prometheus.NewRegistry()}
	e.metrics = NewMetrics(e.reg)
	client, err := checkaccess.New(&checkaccess.Config{RelayURL: e.relay.ts.URL, HTTPClient: e.relay.ts.Client(), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	paths, _ := authz.NewPathMatcher(DefaultAllowedPaths)
	cfg := AuthorizerConfig{
		Checker:      client,
		Cache:        cache.New(&cache.Config{AllowedTTL: time.Minute, DeniedTTL: 10 * time.Second, Now: e.clk.now}),
		AllowedPaths: paths,
		SkipUsers:    []string{"breakglass@contoso.example"},
		SkipGroups:   []string{"grp-breakglass"},
		Metrics:      e.metrics,
		Now:          e.clk.now,
	}
	if mod != nil {
		mod(&cfg)
	}
	if cfg.Cache == nil {
		cfg.Cache = cache.New(&cache.Config{Now: e.clk.now})
	}
	if e.a, err = NewAuthorizer(cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

func sar(user, oid string, groups []string, ra *authzv1.ResourceAttributes) *authzv1.SubjectAccessReviewSpec {
	s := &authzv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: ra}
	if oid != "" {
		s.Extra = map[string]authzv1.ExtraValue{"oid": {oid}, "tid": {"tenant"}}
	}
	return s
}

func getPods(ns string) *authzv1.ResourceAttributes {
	return &authzv1.ResourceAttributes{Verb: "get", Resource: "pods", Namespace: ns, Version: "v1"}
}

func want(t *testing.T, st authzv1.SubjectAccessReviewStatus, allowed, denied bool, reason string) {
	t.Helper()
	if st.Allowed != allowed || st.Denied != denied || !strings.Contains(st.Reason, reason) {
		t.Errorf("got allowed=%v denied=%v reason=%q; want allowed=%v denied=%v reason containing %q", st.Allowed, st.Denied, st.Reason, allowed, denied, reason)
	}
}

func TestNotGuarded(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	for name, spec := range map[string]*authzv1.SubjectAccessReviewSpec{
		"service account":  sar("system:serviceaccount:team-a:default", "", []string{"system:serviceaccounts"}, getPods("team-a")),
		"system user oid":  sar("system:kube-controller-manager", "oid-1", nil, getPods("team-a")),
		"no oid extra":     sar("alice", "", []string{"system:authenticated"}, getPods("team-a")),
		"empty oid":        {User: "alice", Extra: map[string]authzv1.ExtraValue{"oid": {""}}, ResourceAttributes: getPods("team-a")},
		"two oids":         {User: "alice", Extra: map[string]authzv1.ExtraValue{"oid": {"a", "b"}}, ResourceAttributes: getPods("team-a")},
		"skipped user":     sar("breakglass@contoso.example", "oid-bg", nil, getPods("team-a")),
		"skipped group":    sar("carol", "oid-c", []string{"grp-x", "grp-breakglass"}, getPods("team-a")),
		"no user":          {ResourceAttributes: getPods("team-a")},
		"no attributes":    sar("alice", "oid-a", nil, nil),
		"unmappable verbs": sar("alice", "oid-a", nil, &authzv1.ResourceAttributes{Resource: "pods"}),
	} {
		st := e.a.Authorize(ctx, spec)
		if st.Allowed || st.Denied || st.Reason == "" {
			t.Errorf("%s: want no opinion with a reason, got %+v", name, st)
		}
	}
	if n := e.relay.numCalls(); n != 0 {
		t.Errorf("the relay was asked %d times", n)
	}
	if got := testutil.ToFloat64(e.metrics.decisions.WithLabelValues(ResultNoOpinion, string(SourceNotGuarded))); got != 8 {
		t.Errorf("no_opinion/not_guarded = %v", got)
	}
}

func TestAllowedPaths(t *testing.T) {
	e := newEnv(t, nil)
	nr := func(path, verb string) *authzv1.SubjectAccessReviewSpec {
		s := sar("alice", "oid-a", nil, nil)
		s.NonResourceAttributes = &authzv1.NonResourceAttributes{Path: path, Verb: verb}
		return s
	}
	want(t, e.a.Authorize(t.Context(), nr("/apis/apps/v1", "get")), true, false, "/apis/apps/v1")
	want(t, e.a.Authorize(t.Context(), nr("/openapi/v3", "get")), true, false, "")
	if e.relay.numCalls() != 0 {
		t.Fatal("allowed paths asked the relay")
	}
	// Other paths and verbs are data actions like any other.
	want(t, e.a.Authorize(t.Context(), nr("/metrics", "get")), false, true, p+"metrics/read denied at cluster scope")
	want(t, e.a.Authorize(t.Context(), nr("/version", "post")), false, true, p+"version/write")
	if e.relay.numCalls() != 2 {
		t.Fatalf("relay calls %d", e.relay.numCalls())
	}
}

func TestRelayDecidesAndIsCached(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	e.relay.allow("grp-viewers", p+"pods/read", "team-a")
	alice := func(ra *authzv1.ResourceAttributes) *authzv1.SubjectAccessReviewSpec {
		return sar("alice@contoso.example", "oid-alice", []string{"grp-viewers", "system:authenticated", "grp-a", "grp-viewers"}, ra)
	}
	want(t, e.a.Authorize(ctx, alice(getPods("team-a"))), true, false, "Viewer assigned to grp-viewers")
	calls := e.relay.calls
	if len(calls) != 1 {
		t.Fatalf("calls %d", len(calls))
	}
	c := calls[0]
	if c.Subject.OID != "oid-alice" || !slices.Equal(c.Subject.Groups, []string{"grp-a", "grp-viewers"}) ||
		!slices.Equal(c.Actions, []string{p + "pods/read"}) || c.Namespace != "team-a" {
		t.Errorf("request %+v", c)
	}
	// The same decision again (other group order, list instead of get): cached.
	spec := alice(&authzv1.ResourceAttributes{Verb: "list", Resource: "pods", Namespace: "team-a"})
	spec.Groups = []string{"grp-a", "grp-viewers", "system:authenticated"}
	want(t, e.a.Authorize(ctx, spec), true, false, "Viewer")
	if e.relay.numCalls() != 1 {
		t.Error("cached decision asked the relay")
	}
	// Another namespace, another action: denied, naming the action and scope.
	want(t, e.a.Authorize(ctx, alice(getPods("team-b"))), false, true, p+"pods/read denied at namespace team-b: no role assignment allows")
	want(t, e.a.Authorize(ctx, alice(&authzv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: "team-a"})), false, true, p+"secrets/read denied")
	want(t, e.a.Authorize(ctx, alice(&authzv1.ResourceAttributes{Verb: "list", Resource: "nodes"})), false, true, "at cluster scope")
	if e.relay.numCalls() != 4 {
		t.Fatalf("calls %d", e.relay.numCalls())
	}
	// Denials are cached for the denied TTL only.
	want(t, e.a.Authorize(ctx, alice(getPods("team-b"))), false, true, "")
	if e.relay.numCalls() != 4 {
		t.Error("cached denial asked the relay")
	}
	e.relay.allow("oid-alice", p+"pods/read", "team-b")
	e.clk.advance(10 * time.Second)
	want(t, e.a.Authorize(ctx, alice(getPods("team-b"))), true, false, "oid-alice")
	// Allows live for the allowed TTL.
	e.clk.advance(49 * time.Second)
	want(t, e.a.Authorize(ctx, alice(getPods("team-a"))), true, false, "")
	calls5 := e.relay.numCalls()
	e.clk.advance(time.Second)
	want(t, e.a.Authorize(ctx, alice(getPods("team-a"))), true, false, "")
	if e.relay.numCalls() != calls5+1 {
		t.Error("an expired allow was not asked again")
	}
	if hits := testutil.ToFloat64(e.metrics.cache.WithLabelValues("hit")); hits != 3 {
		t.Errorf("cache hits %v", hits)
	}
	if n := testutil.CollectAndCount(e.metrics.relay); n != 3 {
		t.Errorf("relay histogram series %d", n)
	}
}

// An allow resting on a time-bound assignment is cached until the
// assignment expires (the relay's ValidUntil), not for the whole TTL.
func TestCachedAllowEndsWithValidUntil(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	e.relay.allow("oid-a", p+"pods/read", "ns")
	e.relay.mu.Lock()
	e.relay.validUntil = e.clk.now().Add(20 * time.Second)
	e.relay.mu.Unlock()
	spec := sar("alice", "oid-a", nil, getPods("ns"))
	want(t, e.a.Authorize(ctx, spec), true, false, "Viewer")
	e.clk.advance(20*time.Second - time.Nanosecond)
	want(t, e.a.Authorize(ctx, spec), true, false, "Viewer")
	if n := e.relay.numCalls(); n != 1 {
		t.Fatalf("relay calls %d before ValidUntil, want 1", n)
	}
	// The assignment expired: the relay is asked again, and now denies.
	e.relay.mu.Lock()
	e.relay.allowed = map[string]bool{}
	e.relay.mu.Unlock()
	e.clk.advance(time.Nanosecond)
	want(t, e.a.Authorize(ctx, spec), false, true, "no role assignment")
	if n := e.relay.numCalls(); n != 2 {
		t.Errorf("relay calls %d, want 2: the cached allow outlived ValidUntil", n)
	}
}

func TestGroupsPrefix(t *testing.T) {
	e := newEnv(t, func(c *AuthorizerConfig) { c.GroupsPrefix = "aad:" })
	e.relay.allow("g1", p+"pods/read", "ns")
	want(t, e.a.Authorize(t.Context(), sar("aad:alice", "oid-a", []string{"aad:g1", "g2", "system:authenticated"}, getPods("ns"))), true, false, "")
	if g := e.relay.calls[0].Subject.Groups; !slices.Equal(g, []string{"g1"}) {
		t.Errorf("groups sent %q", g)
	}
}

func TestRelayRefusalCachedAsDeny(t *testing.T) {
	e := newEnv(t, nil)
	e.relay.fail(http.StatusForbidden)
	spec := sar("alice", "oid-a", nil, getPods("ns"))
	want(t, e.a.Authorize(t.Context(), spec), false, true, "refused the access check (HTTP 403): relay says no")
	e.relay.fail(0)
	e.relay.allow("oid-a", p+"pods/read", "ns")
	want(t, e.a.Authorize(t.Context(), spec), false, true, "HTTP 403")
	if e.relay.numCalls() != 1 {
		t.Error("a 4xx answer was not cached")
	}
	e.clk.advance(10 * time.Second)
	want(t, e.a.Authorize(t.Context(), spec), true, false, "")
	if got := testutil.ToFloat64(e.metrics.decisions.WithLabelValues(ResultDenied, string(SourceRelayRefused))); got != 1 {
		t.Errorf("denied/relay_refused = %v", got)
	}
}

func TestRelayFailureModes(t *testing.T) {
	for _, mode := range []FailureMode{FailureDeny, FailureNoOpinion} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, func(c *AuthorizerConfig) { c.FailureMode = mode; c.RelayBackoff = 2 * time.Second })
			ctx := t.Context()
			e.relay.allow("oid-a", p+"pods/read", "ns")
			cached := sar("alice", "oid-a", nil, getPods("ns"))
			want(t, e.a.Authorize(ctx, cached), true, false, "")

			e.relay.fail(http.StatusServiceUnavailable)
			miss := sar("alice", "oid-a", nil, getPods("other"))
			st := e.a.Authorize(ctx, miss)
			denied := mode == FailureDeny
			want(t, st, false, denied, "the relay could not decide "+p+"pods/read at namespace other")
			want(t, st, false, denied, "HTTP 503")
			// Within the back-off the relay is not asked; cached decisions work.
			want(t, e.a.Authorize(ctx, miss), false, denied, "not asked again")
			want(t, e.a.Authorize(ctx, cached), true, false, "")
			if n := e.relay.numCalls(); n != 2 {
				t.Errorf("relay calls %d, want 2", n)
			}
			// 5xx answers are not cached: once the relay is back and the
			// back-off over, it decides.
			e.relay.fail(0)
			e.relay.allow("oid-a", p+"pods/read", "other")
			e.clk.advance(2 * time.Second)
			want(t, e.a.Authorize(ctx, miss), true, false, "")
			if got := testutil.ToFloat64(e.metrics.decisions.WithLabelValues(map[bool]string{true: ResultDenied, false: ResultNoOpinion}[denied], string(SourceRelayError))); got != 2 {
				t.Errorf("relay_error decisions %v", got)
			}
		})
	}
}

func TestRelayUnreachable(t *testing.T) {
	e := newEnv(t, func(c *AuthorizerConfig) { c.RelayBackoff = -1 })
	e.relay.allow("oid-a", p+"pods/read", "ns")
	cached := sar("alice", "oid-a", nil, getPods("ns"))
	want(t, e.a.Authorize(t.Context(), cached), true, false, "")
	e.relay.ts.Close() // connection refused from now on
	start := time.Now()
	want(t, e.a.Authorize(t.Context(), sar("alice", "oid-a", nil, getPods("x"))), false, true, "could not decide")
	want(t, e.a.Authorize(t.Context(), sar("alice", "oid-a", nil, getPods("y"))), false, true, "could not decide")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("failing took %s", d)
	}
	want(t, e.a.Authorize(t.Context(), cached), true, false, "")
}

func TestRelayTimeout(t *testing.T) {
	block := make(chan struct{})
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer ts.Close()
	defer close(block)
	client, _ := checkaccess.New(&checkaccess.Config{RelayURL: ts.URL, HTTPClient: ts.Client(), Timeout: 100 * time.Millisecond})
	defer client.Close()
	a, _ := NewAuthorizer(AuthorizerConfig{Checker: client, FailureMode: FailureNoOpinion})
	st := a.Authorize(t.Context(), sar("alice", "oid-a", nil, getPods("ns")))
	want(t, st, false, false, "deadline exceeded")
}

func TestNewAuthorizerChecks(t *testing.T) {
	if _, err := NewAuthorizer(AuthorizerConfig{}); err == nil {
		t.Error("no checker accepted")
	}
	c, _ := checkaccess.New(&checkaccess.Config{RelayURL: "https://x", HTTPClient: http.DefaultClient})
	if _, err := NewAuthorizer(AuthorizerConfig{Checker: c, FailureMode: "allow"}); err == nil {
		t.Error("failure mode allow accepted")
	}
}
