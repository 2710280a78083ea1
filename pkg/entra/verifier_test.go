package entra_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/aadproxy/graph"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/test/oidc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	tenant      = "11111111-2222-3333-4444-555555555555"
	otherTenant = "99999999-2222-3333-4444-555555555555"
	clientID    = "00000000-aaaa-bbbb-cccc-000000000001"
	appIDURI    = "api://clusterconnect"
	graphApp    = "graph-reader"
	graphSecret = "graph-secret"
)

type env struct {
	iss     *oidc.Issuer
	v       *entra.Verifier
	clock   *clock
	reg     *prometheus.Registry
	metrics *entra.Metrics
	client  *http.Client
}

// refreshInterval is the verifiers' MinRefreshInterval: tests that need
// another JWKS fetch advance the clock past it.
const refreshInterval = time.Minute

// clock is the real time plus what the test advanced it by, so that the
// tokens the issuer mints with the real time stay valid.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

func client(t *testing.T, caPEM []byte) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// newEnv starts a local issuer and a verifier for it. mod adjusts the
// verifier's config.
func newEnv(t *testing.T, mod func(*entra.Config)) *env {
	t.Helper()
	iss, err := oidc.Start(&oidc.Options{Clients: map[string]string{graphApp: graphSecret}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	e := &env{iss: iss, clock: &clock{}, reg: prometheus.NewRegistry(), client: client(t, iss.CAPEM)}
	e.metrics = entra.NewMetrics(e.reg, "test")
	cfg := &entra.Config{
		IssuerURL:          iss.URL,
		V1IssuerURL:        iss.V1Base(),
		Tenants:            []string{tenant},
		Audiences:          []string{clientID, appIDURI},
		HTTPClient:         e.client,
		Metrics:            e.metrics,
		MinRefreshInterval: refreshInterval,
	}
	if mod != nil {
		mod(cfg)
	}
	if e.v, err = entra.NewVerifier(cfg); err != nil {
		t.Fatal(err)
	}
	e.v.SetClock(e.clock.now)
	return e
}

func good(version int) oidc.Token {
	aud := clientID
	if version == 1 {
		aud = appIDURI
	}
	return oidc.Token{Version: version, Tenant: tenant, Audience: aud, UPN: "alice@example.com", OID: "oid-alice", Groups: []string{"g-1", "g-2"}}
}

func TestVerifyBothIssuerForms(t *testing.T) {
	e := newEnv(t, nil)
	for _, ver := range []int{1, 2} {
		id, err := e.v.Verify(t.Context(), e.iss.MustMint(good(ver)))
		if err != nil {
			t.Fatalf("v%d: %v", ver, err)
		}
		if id.Username != "alice@example.com" || !slices.Equal(id.Groups, []string{"g-1", "g-2"}) || id.ObjectID != "oid-alice" || id.TenantID != tenant || id.Version != ver {
			t.Errorf("v%d identity = %+v", ver, id)
		}
		if ex := id.Extra(); ex["oid"][0] != "oid-alice" || ex["tid"][0] != tenant {
			t.Errorf("v%d extras = %v", ver, ex)
		}
	}
	if got := e.metrics.VerifyCount("ok"); got != 2 {
		t.Errorf("verify ok count = %v, want 2", got)
	}
}

func TestUsernameClaims(t *testing.T) {
	e := newEnv(t, func(c *entra.Config) { c.UsernamePrefix, c.GroupsPrefix = "aad:", "aadgroup:" })
	tok := good(2)
	tok.UPN = "" // no preferred_username: falls back to oid
	id, err := e.v.Verify(t.Context(), e.iss.MustMint(tok))
	if err != nil {
		t.Fatal(err)
	}
	if id.Username != "aad:oid-alice" || id.Groups[0] != "aadgroup:g-1" {
		t.Errorf("identity = %+v", id)
	}
	e2 := newEnv(t, func(c *entra.Config) { c.UsernameClaims = []string{"email"} })
	tok = good(2)
	tok.Extra = map[string]any{"email": "alice@mail.example"}
	if id, err := e2.v.Verify(t.Context(), e2.iss.MustMint(tok)); err != nil || id.Username != "alice@mail.example" {
		t.Errorf("email claim: %+v %v", id, err)
	}
	tok.Extra = nil
	if _, err := e2.v.Verify(t.Context(), e2.iss.MustMint(tok)); entra.ReasonOf(err) != entra.ReasonInvalidIdentity {
		t.Errorf("missing username claim: %v", err)
	}
}

func TestRefused(t *testing.T) {
	e := newEnv(t, nil)
	other, err := oidc.Start(nil) // same shape, other keys
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tampered, _ := oidc.Tamper(e.iss.MustMint(good(2)), "preferred_username", "admin@example.com")
	foreignKey, _ := other.Sign(e.iss.Claims(good(2)), "RS256")
	mint := func(f func(*oidc.Token)) string {
		tok := good(2)
		f(&tok)
		return e.iss.MustMint(tok)
	}
	for _, tc := range []struct {
		name  string
		raw   string
		want  entra.Reason
		inMsg string
	}{
		{"expired", mint(func(t *oidc.Token) { t.TTL = -10 * time.Minute }), entra.ReasonExpired, "expired at"},
		{"not yet valid", mint(func(t *oidc.Token) { t.NotBefore = 10 * time.Minute }), entra.ReasonNotYetValid, "not valid before"},
		{"wrong audience", mint(func(t *oidc.Token) { t.Audience = "api://someone-else" }), entra.ReasonWrongAudience, `audience ["api://someone-else"]`},
		{"wrong tenant v2", mint(func(t *oidc.Token) { t.Tenant = otherTenant }), entra.ReasonUnknownIssuer, "tenant is not configured"},
		{"wrong tenant v1", mint(func(t *oidc.Token) { t.Tenant, t.Version = otherTenant, 1 }), entra.ReasonUnknownIssuer, "tenant is not configured"},
		{"alg none", mint(func(t *oidc.Token) { t.Alg = "none" }), entra.ReasonAlgorithm, `"none" is refused`},
		{"alg HS256", mint(func(t *oidc.Token) { t.Alg = "HS256" }), entra.ReasonAlgorithm, `"HS256" is refused`},
		{"tampered", tampered, entra.ReasonBadSignature, "does not verify"},
		{"unknown key", foreignKey, entra.ReasonUnknownKey, "is not among the issuer's keys"},
		{"tid mismatch", mint(func(t *oidc.Token) { t.Extra = map[string]any{"tid": otherTenant} }), entra.ReasonInvalidIdentity, "does not match"},
		{"system user", mint(func(t *oidc.Token) { t.UPN = "system:admin" }), entra.ReasonInvalidIdentity, "reserved"},
		{"system group", mint(func(t *oidc.Token) { t.Groups = []string{"system:masters"} }), entra.ReasonInvalidIdentity, "reserved"},
		{"groups not strings", mint(func(t *oidc.Token) { t.Extra = map[string]any{"groups": "g-1"} }), entra.ReasonMalformed, "groups"},
		{"no oid", mint(func(t *oidc.Token) { t.Extra = map[string]any{"oid": ""} }), entra.ReasonInvalidIdentity, "no oid"},
		{"overage without resolver", mint(func(t *oidc.Token) { t.Overage = true }), entra.ReasonGroupsOverage, "no Graph endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := e.v.Verify(t.Context(), tc.raw)
			var te *entra.Error
			if !errors.As(err, &te) || te.Reason != tc.want {
				t.Fatalf("Verify = %+v, %v; want reason %s", id, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.inMsg) {
				t.Errorf("message %q lacks %q", err, tc.inMsg)
			}
			if strings.Contains(err.Error(), tc.raw) {
				t.Error("the error message contains the token")
			}
		})
	}
	if got := testutil.ToFloat64(e.metrics.FailureCount(entra.ReasonBadSignature)); got != 1 {
		t.Errorf("bad_signature failures = %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.metrics.FailureCount(entra.ReasonUnknownKey)); got != 1 {
		t.Errorf("unknown_key failures = %v, want 1", got)
	}
}

func TestNotEntraPassesThrough(t *testing.T) {
	e := newEnv(t, nil)
	sa, _ := e.iss.Sign(map[string]any{"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:ns:sa", "aud": []string{"https://kubernetes.default.svc"}, "exp": time.Now().Add(time.Hour).Unix()}, "RS256")
	foreign, _ := e.iss.Sign(map[string]any{"iss": "https://accounts.google.com", "aud": clientID}, "none")
	for name, raw := range map[string]string{
		"service account": sa,
		"other issuer":    foreign,
		"opaque":          "abcdef.0123456789",
		"static token":    "e2e-admin-token",
		"garbage jwt":     "a.b.c",
	} {
		if _, err := e.v.Verify(t.Context(), raw); !errors.Is(err, entra.ErrNotEntra) {
			t.Errorf("%s: err = %v, want ErrNotEntra", name, err)
		}
	}
	if n := e.iss.Stats().JWKSFetches; n != 0 {
		t.Errorf("pass-through tokens caused %d JWKS fetches", n)
	}
}

func TestKeyRotation(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	if _, err := e.v.Verify(ctx, e.iss.MustMint(good(2))); err != nil {
		t.Fatal(err)
	}
	fetches := e.iss.Stats().JWKSFetches
	// A forged token with a known key ID does not make the verifier fetch.
	tampered, _ := oidc.Tamper(e.iss.MustMint(good(2)), "oid", "x")
	for range 5 {
		e.v.Verify(ctx, tampered)
	}
	if n := e.iss.Stats().JWKSFetches; n != fetches {
		t.Errorf("forged tokens with a known kid caused %d JWKS fetches", n-fetches)
	}
	// A new key right after a fetch: refused at once, without a fetch.
	oldTok := e.iss.MustMint(good(2))
	if err := e.iss.RotateKey(); err != nil {
		t.Fatal(err)
	}
	newTok := e.iss.MustMint(good(2))
	_, err := e.v.Verify(ctx, newTok)
	if entra.ReasonOf(err) != entra.ReasonUnknownKey || !strings.Contains(err.Error(), "refreshed 0s ago") {
		t.Fatalf("new key within the refresh interval: %v, want an unknown_key refusal saying when the keys were refreshed", err)
	}
	if n := e.iss.Stats().JWKSFetches; n != fetches {
		t.Errorf("a new key within the refresh interval caused %d JWKS fetches", n-fetches)
	}
	// Once the interval has passed: one refresh, then tokens of both keys
	// verify.
	e.clock.advance(refreshInterval)
	for _, raw := range []string{newTok, e.iss.MustMint(good(1)), e.iss.MustMint(good(2)), oldTok} {
		if _, err := e.v.Verify(ctx, raw); err != nil {
			t.Fatalf("after rotation: %v", err)
		}
	}
	// v1 and v2 have a key set each: one fetch each (v1's first).
	if n := e.iss.Stats().JWKSFetches - fetches; n != 2 {
		t.Errorf("rotation caused %d JWKS fetches, want 2", n)
	}
	if got := testutil.ToFloat64(e.metrics.JWKSRefreshCount("ok")); got != float64(e.iss.Stats().JWKSFetches) {
		t.Errorf("jwks refresh metric = %v, issuer saw %d", got, e.iss.Stats().JWKSFetches)
	}
}

// forged signs the claims of a good token with a key the issuer does not
// publish.
func forged(t *testing.T, e *env) string {
	t.Helper()
	other, err := oidc.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	raw, err := other.Sign(e.iss.Claims(good(2)), "RS256")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// verifyAll verifies raw n times at once and returns the errors.
func verifyAll(ctx context.Context, v *entra.Verifier, raw string, n int) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { _, errs[i] = v.Verify(ctx, raw) })
	}
	wg.Wait()
	return errs
}

// A flood of tokens with unknown key IDs right after a JWKS fetch is
// refused at once: nobody waits for the next allowed refresh, which would
// hold every connection for the interval, and nobody fetches.
func TestUnknownKeyFloodIsRefusedAtOnce(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.v.Verify(t.Context(), e.iss.MustMint(good(2))); err != nil {
		t.Fatal(err)
	}
	fetches := e.iss.Stats().JWKSFetches
	raw := forged(t, e)
	// Far shorter than the refresh interval: a caller that waited for the
	// next refresh would end with this deadline (issuer_unavailable).
	ctx, cancel := context.WithTimeout(t.Context(), refreshInterval/6)
	defer cancel()
	for i, err := range verifyAll(ctx, e.v, raw, 500) {
		if entra.ReasonOf(err) != entra.ReasonUnknownKey || !strings.Contains(err.Error(), "is not among the issuer's keys") {
			t.Fatalf("token %d: %v, want an unknown_key refusal", i, err)
		}
	}
	if ctx.Err() != nil {
		t.Fatal("the refusals waited for the deadline")
	}
	if n := e.iss.Stats().JWKSFetches; n != fetches {
		t.Errorf("%d JWKS fetches, want none", n-fetches)
	}
}

// When a refresh is allowed, callers with unknown key IDs share one fetch;
// those after it are refused at once again.
func TestUnknownKeyFloodSharesOneRefresh(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.v.Verify(t.Context(), e.iss.MustMint(good(2))); err != nil {
		t.Fatal(err)
	}
	fetches := e.iss.Stats().JWKSFetches
	raw := forged(t, e)
	e.clock.advance(refreshInterval)
	for i, err := range verifyAll(t.Context(), e.v, raw, 50) {
		if entra.ReasonOf(err) != entra.ReasonUnknownKey {
			t.Fatalf("token %d: %v, want an unknown_key refusal", i, err)
		}
	}
	if n := e.iss.Stats().JWKSFetches - fetches; n != 1 {
		t.Errorf("%d JWKS fetches, want 1", n)
	}
}

// A failed fetch is remembered for the interval: tokens with unknown key
// IDs get issuer_unavailable at once (the token may be good), and the
// issuer is not asked again until the interval has passed.
func TestFailedRefreshIsNotRetriedWithinInterval(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	if _, err := e.v.Verify(ctx, e.iss.MustMint(good(2))); err != nil {
		t.Fatal(err)
	}
	sw := &switchable{next: e.client.Transport}
	e.client.Transport = sw
	e.iss.RotateKey()
	raw := e.iss.MustMint(good(2))
	e.clock.advance(refreshInterval)
	sw.setDown(true)
	for range 3 {
		if _, err := e.v.Verify(ctx, raw); entra.ReasonOf(err) != entra.ReasonIssuerUnavailable || !strings.Contains(err.Error(), "JWKS is down") {
			t.Fatalf("JWKS down: %v", err)
		}
	}
	if n := sw.count(); n != 1 {
		t.Errorf("%d JWKS requests within the interval of a failure, want 1", n)
	}
	sw.setDown(false)
	e.clock.advance(refreshInterval)
	if _, err := e.v.Verify(ctx, raw); err != nil {
		t.Fatalf("after the interval: %v", err)
	}
	if n := sw.count(); n != 2 {
		t.Errorf("%d JWKS requests, want 2", n)
	}
}

// switchable counts requests and fails them while down.
type switchable struct {
	next http.RoundTripper

	mu    sync.Mutex
	down  bool
	calls int
}

func (s *switchable) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.calls++
	down := s.down
	s.mu.Unlock()
	if down {
		return nil, errors.New("JWKS is down")
	}
	return s.next.RoundTrip(r)
}

func (s *switchable) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *switchable) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// A caller that gives up while the keys are fetched is answered at once,
// and its abandoned fetch does not count as the issuer failing.
func TestCancelledRefresh(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	if _, err := e.v.Verify(ctx, e.iss.MustMint(good(2))); err != nil {
		t.Fatal(err)
	}
	e.iss.RotateKey()
	raw := e.iss.MustMint(good(2))
	e.clock.advance(refreshInterval)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.v.Verify(cctx, raw); entra.ReasonOf(err) != entra.ReasonIssuerUnavailable {
		t.Errorf("cancelled verify: %v", err)
	}
	if _, err := e.v.Verify(ctx, raw); err != nil {
		t.Errorf("the next caller: %v", err)
	}
}

func TestOverage(t *testing.T) {
	iss, err := oidc.Start(&oidc.Options{Clients: map[string]string{graphApp: graphSecret}})
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	hc := client(t, iss.CAPEM)
	res, err := graph.New(&graph.Config{GraphURL: iss.GraphURL(), IssuerURL: iss.URL, ClientID: graphApp, ClientSecret: graphSecret, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	v, err := entra.NewVerifier(&entra.Config{IssuerURL: iss.URL, V1IssuerURL: iss.V1Base(), Tenants: []string{tenant}, Audiences: []string{clientID}, HTTPClient: hc, Groups: res})
	if err != nil {
		t.Fatal(err)
	}
	many := make([]string, 250)
	for i := range many {
		many[i] = "g-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
	}
	iss.SetMemberGroups("oid-alice", many)
	tok := good(2)
	tok.Overage = true
	raw := iss.MustMint(tok)
	for range 3 {
		id, err := v.Verify(t.Context(), raw)
		if err != nil {
			t.Fatal(err)
		}
		if len(id.Groups) != 250 || !id.GroupsResolved {
			t.Fatalf("resolved %d groups (resolved=%v), want 250", len(id.Groups), id.GroupsResolved)
		}
	}
	if st := iss.Stats(); st.GraphCalls != 1 || st.TokenCalls["client_credentials"] != 1 {
		t.Errorf("3 verifications made %d Graph calls and %d app token requests, want 1 and 1 (cached)", st.GraphCalls, st.TokenCalls["client_credentials"])
	}
	// A user Graph does not know: fail closed with the Graph error.
	tok.OID = "oid-unknown"
	_, err = v.Verify(t.Context(), iss.MustMint(tok))
	if entra.ReasonOf(err) != entra.ReasonGroupsOverage || !strings.Contains(err.Error(), "Request_ResourceNotFound") {
		t.Errorf("unknown user: %v", err)
	}
	// Wrong app credentials: fail closed, saying so.
	bad, _ := graph.New(&graph.Config{GraphURL: iss.GraphURL(), IssuerURL: iss.URL, ClientID: graphApp, ClientSecret: "wrong", HTTPClient: hc})
	if _, err := bad.MemberGroups(t.Context(), tenant, "oid-alice"); err == nil || !strings.Contains(err.Error(), "check the client ID and secret") {
		t.Errorf("wrong secret: %v", err)
	}
}

func TestIssuerUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + ln.Addr().String()
	ln.Close()
	v, err := entra.NewVerifier(&entra.Config{IssuerURL: base, V1IssuerURL: base + "/sts", Tenants: []string{tenant}, Audiences: []string{clientID}})
	if err != nil {
		t.Fatal(err)
	}
	iss, _ := oidc.Start(nil)
	defer iss.Close()
	raw, _ := iss.Sign(map[string]any{"iss": base + "/" + tenant + "/v2.0", "aud": clientID}, "RS256")
	if _, err := v.Verify(t.Context(), raw); entra.ReasonOf(err) != entra.ReasonIssuerUnavailable {
		t.Errorf("issuer down: %v", err)
	}
}

func TestConfigRefusesSymmetricAndNone(t *testing.T) {
	for _, algs := range [][]string{{"none"}, {"HS256"}, {"RS256", "HS512"}} {
		if _, err := entra.NewVerifier(&entra.Config{Tenants: []string{tenant}, Audiences: []string{clientID}, Algorithms: algs}); err == nil {
			t.Errorf("algorithms %v accepted", algs)
		}
	}
	if _, err := entra.NewVerifier(nil); err == nil || !strings.Contains(err.Error(), "tenant") || !strings.Contains(err.Error(), "audience") {
		t.Errorf("nil config: %v", err)
	}
}
