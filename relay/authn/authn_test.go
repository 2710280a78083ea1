package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/secret"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	adminToken     = "admin-0123456789abcdef"
	goodJWT        = "good.jwt.token"
	unavailableJWT = "unavailable.jwt.token"
	goodOID        = "00000000-0000-0000-0000-00000000a11c"
)

// jwt is an unsigned JWS with the given issuer, shaped like the real thing.
func jwt(iss string) string {
	enc := base64.RawURLEncoding.EncodeToString
	payload, _ := json.Marshal(map[string]any{"iss": iss, "sub": "system:serviceaccount:default:app", "exp": 4102444800})
	return enc([]byte(`{"alg":"RS256","kid":"k1"}`)) + "." + enc(payload) + "." + enc([]byte("signature"))
}

// saJWT is a Kubernetes service-account token.
var saJWT = jwt("https://kubernetes.default.svc.cluster.local")

// fakeEntra stands for *entra.Verifier: ErrNotEntra for what is not a JWT
// of an Entra issuer (a service-account token), an identity for goodJWT,
// an unreachable issuer for unavailableJWT, a bad signature otherwise.
type fakeEntra struct {
	calls  atomic.Int32
	expiry time.Time
}

func (f *fakeEntra) Verify(_ context.Context, raw string) (*entra.Identity, error) {
	f.calls.Add(1)
	switch raw {
	case goodJWT:
		return &entra.Identity{Username: "dev@contoso.example", ObjectID: goodOID, TenantID: "tid", Groups: []string{"g1", "g2"}, Expiry: f.expiry}, nil
	case unavailableJWT:
		return nil, &entra.Error{Reason: entra.ReasonIssuerUnavailable, Err: errors.New("fetch the issuer's signing keys: connection refused")}
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, entra.ErrNotEntra
	}
	var claims struct{ Iss string }
	if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err != nil || json.Unmarshal(b, &claims) != nil ||
		!strings.HasPrefix(claims.Iss, "https://login.microsoftonline.com/") {
		return nil, entra.ErrNotEntra
	}
	return nil, &entra.Error{Reason: entra.ReasonBadSignature, Err: errors.New("signature does not verify")}
}

// clock is a settable Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

type env struct {
	t     testing.TB
	a     *Authenticator
	st    *store.Bolt
	ca    *clusterca.CA
	clock *clock
	entra *fakeEntra // nil: Entra sign-in off
	start time.Time
}

func newCA(t testing.TB) *clusterca.CA {
	t.Helper()
	certPEM, keyPEM, err := clusterca.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := clusterca.Load(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// newEnv is an Authenticator on a fresh bolt store and CA, with the admin
// token, and Entra sign-in when withEntra.
func newEnv(t testing.TB, withEntra bool) *env {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// The CA is valid from an hour ago: start the clock at the real time.
	e := &env{t: t, st: st, ca: newCA(t), start: time.Now().Truncate(time.Second)}
	e.clock = &clock{t: e.start}
	cfg := Config{Store: st, CA: e.ca, AdminToken: adminToken, Now: e.clock.Now}
	if withEntra {
		e.entra = &fakeEntra{expiry: e.start.Add(time.Hour)}
		cfg.Entra = e.entra
	}
	if e.a, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

// token stores an API token expiring at expires and returns it whole.
func (e *env) token(id, name string, expires time.Time) string {
	e.t.Helper()
	full := api.APITokenPrefix + id + "_" + secret.Random(32)
	if err := e.st.CreateToken(context.Background(), &store.APIToken{ID: id, Name: name, Role: "Reader", Hash: secret.Hash(full),
		CreatedAt: e.start, ExpiresAt: expires}); err != nil {
		e.t.Fatal(err)
	}
	return full
}

func csr(t testing.TB) *x509.CertificateRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := clusterca.ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var dev = api.Principal{Kind: api.PrincipalKindUser, ID: goodOID, Name: "dev@contoso.example", Groups: []string{"g1", "g2"}}

// principalCert is a relay client certificate of ca for p, valid for an hour
// from the start of the clock.
func (e *env) principalCert(ca *clusterca.CA, p api.Principal) *x509.Certificate {
	e.t.Helper()
	_, cert, err := ca.IssuePrincipal(csr(e.t), p, e.start, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return cert
}

// request is a data-path (or management) request with Authorization auth
// (none when empty) and client certificate cert (none when nil).
func request(auth string, cert *x509.Certificate) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "https://relay.example/clusters/prod/api/v1/pods", nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	r.TLS = &tls.ConnectionState{ServerName: "relay.example"}
	if cert != nil {
		r.TLS.PeerCertificates = []*x509.Certificate{cert}
	}
	return r
}

// wantRefused checks that err refuses with code and a message containing
// each of msg.
func wantRefused(t *testing.T, what string, res Result, err *Error, code int, msg ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: authenticated %+v, want %d", what, res.Principal, code)
		return
	}
	if err.Code != code {
		t.Errorf("%s: %d %s (%s), want %d", what, err.Code, err.Reason, err.Message, code)
	}
	if code == http.StatusUnauthorized && err.Reason != api.ReasonUnauthenticated {
		t.Errorf("%s: reason %q, want %q", what, err.Reason, api.ReasonUnauthenticated)
	}
	for _, m := range msg {
		if !strings.Contains(err.Message, m) {
			t.Errorf("%s: message %q does not say %q", what, err.Message, m)
		}
	}
}

func wantPrincipal(t *testing.T, what string, res Result, err *Error, want api.Principal, expires time.Time) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %d %s", what, err.Code, err.Message)
		return
	}
	got := res.Principal
	got.Groups = slices.Sorted(slices.Values(got.Groups))
	if !reflect.DeepEqual(got, want) || !res.Expires.Equal(expires) {
		t.Errorf("%s: %+v until %s, want %+v until %s", what, res.Principal, res.Expires, want, expires)
	}
}

func TestNewNeedsStoreAndCA(t *testing.T) {
	e := newEnv(t, false)
	for _, cfg := range []Config{{Store: e.st}, {CA: e.ca}, {}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestManagement(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	valid := e.token("tok1", "ci", e.start.Add(time.Hour))
	expired := e.token("tok2", "old", e.start.Add(-time.Second))
	endsNow := e.token("tok3", "now", e.start)
	wrongSecret := api.APITokenPrefix + "tok1_" + secret.Random(32)

	admin := api.Principal{Kind: api.PrincipalKindAdmin, ID: "admin", Name: "admin", Via: "bearer"}
	res, err := e.a.Management(ctx, request("Bearer "+adminToken, nil))
	wantPrincipal(t, "admin token", res, err, admin, time.Time{})
	res, err = e.a.Management(ctx, request("bearer  "+adminToken+" ", nil))
	wantPrincipal(t, "admin token, lowercase scheme and spaces", res, err, admin, time.Time{})

	res, err = e.a.Management(ctx, request("Bearer "+valid, nil))
	wantPrincipal(t, "API token", res, err, api.Principal{Kind: api.PrincipalKindToken, ID: "tok1", Name: "ci", Via: "bearer"}, e.start.Add(time.Hour))

	res, err = e.a.Management(ctx, request("Bearer "+expired, nil))
	wantRefused(t, "expired API token", res, err, 401, "tok2", "expired on", "connectctl tokens create")
	res, err = e.a.Management(ctx, request("Bearer "+endsNow, nil))
	wantRefused(t, "API token expiring now", res, err, 401, "expired on")

	// An unknown ID and a wrong secret answer alike: no oracle for IDs.
	res, err = e.a.Management(ctx, request("Bearer "+api.APITokenPrefix+"nope_"+secret.Random(32), nil))
	wantRefused(t, "unknown API token", res, err, 401, "API token nope is not known to this relay", "connectctl tokens create")
	res, err = e.a.Management(ctx, request("Bearer "+wrongSecret, nil))
	wantRefused(t, "API token, wrong secret", res, err, 401, "API token tok1 is not known to this relay", "connectctl tokens create")
	// The ID alone, or another token's secret, is not the token.
	res, err = e.a.Management(ctx, request("Bearer "+api.APITokenPrefix+"tok1_"+strings.TrimPrefix(expired, api.APITokenPrefix+"tok2_"), nil))
	wantRefused(t, "API token, another token's secret", res, err, 401, "not known")
	res, err = e.a.Management(ctx, request("Bearer "+api.APITokenPrefix+"tok1", nil))
	wantRefused(t, "API token ID alone", res, err, 401, "not a credential of this relay")

	res, err = e.a.Management(ctx, request("Bearer "+goodJWT, nil))
	wantPrincipal(t, "Entra token", res, err, api.Principal{Kind: api.PrincipalKindUser, ID: goodOID, Name: "dev@contoso.example", Groups: []string{"g1", "g2"}, Via: "bearer"}, e.start.Add(time.Hour))
	res, err = e.a.Management(ctx, request("Bearer "+jwt("https://login.microsoftonline.com/tid/v2.0"), nil))
	wantRefused(t, "Entra token, bad signature", res, err, 401, "Entra token refused", "connectctl login --entra")
	res, err = e.a.Management(ctx, request("Bearer "+saJWT, nil))
	wantRefused(t, "service-account token", res, err, 401, "not an Entra token", "connectctl")
	res, err = e.a.Management(ctx, request("Bearer "+unavailableJWT, nil))
	wantRefused(t, "Entra issuer unreachable", res, err, 503, "retry")

	for _, auth := range []string{"Bearer garbage", "Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer    ", adminToken, "Token " + adminToken} {
		res, err = e.a.Management(ctx, request(auth, nil))
		wantRefused(t, "Authorization "+auth, res, err, 401, "Authorization: Bearer", "connectctl tokens create", "connectctl login --entra")
	}
	res, err = e.a.Management(ctx, request("", nil))
	wantRefused(t, "no credential", res, err, 401, "no credential", "Authorization: Bearer")
	// A relay client certificate is for the data path only.
	res, err = e.a.Management(ctx, request("", e.principalCert(e.ca, dev)))
	wantRefused(t, "client certificate", res, err, 401, "no credential")
}

func TestManagementWithoutAdminTokenOrEntra(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := New(Config{Store: st, CA: newCA(t)})
	if err != nil {
		t.Fatal(err)
	}
	// With no admin token configured no token is the admin token; with
	// Entra off a JWT is just not a credential (and nothing nil is called).
	for _, auth := range []string{"Bearer " + adminToken, "Bearer  ", "Bearer " + secret.Hash("")} {
		res, aerr := a.Management(context.Background(), request(auth, nil))
		wantRefused(t, "no admin token: "+auth, res, aerr, 401)
	}
	res, aerr := a.Management(context.Background(), request("Bearer "+goodJWT, nil))
	wantRefused(t, "Entra off: "+goodJWT, res, aerr, 401, "not a credential of this relay")
}

func TestManagementStoreDown(t *testing.T) {
	e := newEnv(t, false)
	tok := e.token("tok1", "ci", e.start.Add(time.Hour))
	e.st.Close()
	res, err := e.a.Management(context.Background(), request("Bearer "+tok, nil))
	wantRefused(t, "store closed", res, err, 503, "store unavailable")
}

func TestDataPath(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	cert := e.principalCert(e.ca, dev)
	viaCert := dev
	viaCert.Via = "certificate"

	// The certificate says who calls; the bearer token is the cluster's
	// business: untouched, and never shown to Entra.
	r := request("Bearer "+saJWT, cert)
	res, err := e.a.DataPath(ctx, r)
	wantPrincipal(t, "principal certificate", res, err, viaCert, cert.NotAfter)
	if got := r.Header.Get("Authorization"); got != "Bearer "+saJWT {
		t.Errorf("Authorization after DataPath: %q", got)
	}
	if n := e.entra.calls.Load(); n != 0 {
		t.Errorf("Entra asked %d times about the bearer token beside a certificate", n)
	}
	res, err = e.a.DataPath(ctx, request("", cert))
	wantPrincipal(t, "principal certificate, no bearer token", res, err, viaCert, cert.NotAfter)

	// A token principal's certificate names the token.
	tokCert := e.principalCert(e.ca, api.Principal{Kind: api.PrincipalKindToken, ID: "tok1", Name: "ci"})
	res, err = e.a.DataPath(ctx, request("Bearer "+saJWT, tokCert))
	wantPrincipal(t, "token principal certificate", res, err, api.Principal{Kind: api.PrincipalKindToken, ID: "tok1", Name: "ci", Via: "certificate"}, tokCert.NotAfter)

	_, clusterCert, cerr := e.ca.Issue(csr(t), clusterca.Identity{Cluster: "prod", UID: "uid", Generation: 1}, e.start, time.Hour)
	if cerr != nil {
		t.Fatal(cerr)
	}
	res, err = e.a.DataPath(ctx, request("Bearer "+saJWT, clusterCert))
	wantRefused(t, "cluster certificate", res, err, 401, "not a relay client certificate")

	res, err = e.a.DataPath(ctx, request("Bearer "+saJWT, e.principalCert(newCA(t), dev)))
	wantRefused(t, "certificate of another CA", res, err, 401, "client certificate refused", "connectctl kube-credential")

	res, err = e.a.DataPath(ctx, request("Bearer "+goodJWT, nil))
	wantPrincipal(t, "Entra token", res, err, api.Principal{Kind: api.PrincipalKindUser, ID: goodOID, Name: "dev@contoso.example", Groups: []string{"g1", "g2"}, Via: "bearer"}, e.start.Add(time.Hour))
	// A service-account token alone is no relay identity; that is the
	// caller's mistake (401), not a relay failure (503).
	res, err = e.a.DataPath(ctx, request("Bearer "+saJWT, nil))
	wantRefused(t, "service-account token alone", res, err, 401, "service-account token", "connectctl kubeconfig")
	res, err = e.a.DataPath(ctx, request("Bearer "+unavailableJWT, nil))
	wantRefused(t, "Entra issuer unreachable", res, err, 503, "retry")
	res, err = e.a.DataPath(ctx, request("Bearer opaque-token", nil))
	wantRefused(t, "opaque bearer token alone", res, err, 401, "not a JWT", "relay client certificate")
	res, err = e.a.DataPath(ctx, request("", nil))
	wantRefused(t, "no credential", res, err, 401, "no credential", "connectctl get-token")
	res, err = e.a.DataPath(ctx, request("Bearer "+adminToken, nil))
	wantRefused(t, "admin token on the data path", res, err, 401)

	// Past its NotAfter the certificate is refused, saying so; an Entra
	// token beside it is still a relay identity.
	e.clock.Set(cert.NotAfter.Add(time.Second))
	res, err = e.a.DataPath(ctx, request("Bearer "+saJWT, cert))
	wantRefused(t, "expired certificate", res, err, 401, "expired on "+cert.NotAfter.UTC().Format(time.RFC3339), "connectctl kube-credential")
	res, err = e.a.DataPath(ctx, request("Bearer "+jwt("https://login.microsoftonline.com/tid/v2.0"), cert))
	wantRefused(t, "expired certificate, refused Entra token", res, err, 401, "expired on")
	res, err = e.a.DataPath(ctx, request("Bearer "+unavailableJWT, cert))
	wantRefused(t, "expired certificate, Entra unreachable", res, err, 401, "expired on")
	res, err = e.a.DataPath(ctx, request("Bearer "+goodJWT, cert))
	wantPrincipal(t, "expired certificate, good Entra token", res, err, api.Principal{Kind: api.PrincipalKindUser, ID: goodOID, Name: "dev@contoso.example", Groups: []string{"g1", "g2"}, Via: "bearer"}, e.start.Add(time.Hour))
}

func TestDataPathWithoutEntra(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	for _, tok := range []string{goodJWT, saJWT, "opaque"} {
		res, err := e.a.DataPath(ctx, request("Bearer "+tok, nil))
		wantRefused(t, "Entra off, bearer "+tok, res, err, 401, "Entra sign-in is off", "connectctl kubeconfig")
	}
	cert := e.principalCert(e.ca, dev)
	res, err := e.a.DataPath(ctx, request("Bearer "+saJWT, cert))
	viaCert := dev
	viaCert.Via = "certificate"
	wantPrincipal(t, "Entra off, certificate", res, err, viaCert, cert.NotAfter)
}

// TestCertificateCache: a certificate that verified is not verified again
// on the next request, but the cache never outlives its validity.
func TestCertificateCache(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	cert := e.principalCert(e.ca, dev)
	viaCert := dev
	viaCert.Via = "certificate"

	first, err := e.a.DataPath(ctx, request("", cert))
	wantPrincipal(t, "first request", first, err, viaCert, cert.NotAfter)
	if n := len(e.a.verified); n != 1 {
		t.Fatalf("%d cached certificates, want 1", n)
	}
	// Answered from the cache: a CA that would refuse the certificate is
	// not asked.
	e.a.cfg.CA = newCA(t)
	second, err := e.a.DataPath(ctx, request("", cert))
	if err != nil || !reflect.DeepEqual(second, first) {
		t.Fatalf("second request: %+v, %v; want %+v from the cache", second, err, first)
	}
	e.clock.Set(cert.NotAfter.Add(-time.Second))
	if res, err := e.a.DataPath(ctx, request("", cert)); err != nil || !reflect.DeepEqual(res, first) {
		t.Errorf("a second before NotAfter: %+v, %v; want %+v from the cache", res, err, first)
	}
	e.a.cfg.CA = e.ca

	e.clock.Set(cert.NotAfter.Add(time.Second))
	res, aerr := e.a.DataPath(ctx, request("", cert))
	wantRefused(t, "cached certificate past NotAfter", res, aerr, 401, "expired on "+cert.NotAfter.UTC().Format(time.RFC3339))
	e.clock.Set(cert.NotBefore.Add(-time.Second))
	res, aerr = e.a.DataPath(ctx, request("", cert))
	wantRefused(t, "cached certificate before NotBefore", res, aerr, 401, "not yet valid")

	// Another certificate is verified on its own.
	e.clock.Set(e.start)
	_, clusterCert, cerr := e.ca.Issue(csr(t), clusterca.Identity{Cluster: "prod", UID: "uid", Generation: 1}, e.start, time.Hour)
	if cerr != nil {
		t.Fatal(cerr)
	}
	res, aerr = e.a.DataPath(ctx, request("", clusterCert))
	wantRefused(t, "cluster certificate after a cached one", res, aerr, 401, "not a relay client certificate")
}

// bearer is what secret.Bearer takes from an Authorization header.
func bearer(h string) (string, bool) {
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	tok := strings.TrimSpace(h[7:])
	return tok, tok != ""
}

// FuzzAuthorizationHeader: with no client certificate and no Entra, an
// Authorization header is never a relay identity on the data path; on the
// management API it is one only when its bearer token is the admin token
// (or the one valid API token).
func FuzzAuthorizationHeader(f *testing.F) {
	e := newEnv(f, false)
	valid := e.token("tok1", "ci", e.start.Add(time.Hour))
	expired := e.token("tok2", "old", e.start.Add(-time.Second))
	for _, s := range []string{
		"", "Bearer", "Bearer ", "Bearer " + adminToken, "bearer\t" + adminToken, "BEARER  " + adminToken + "\r\n",
		"Bearer " + adminToken + "x", "Bearer " + valid, "Bearer " + expired, "Bearer cct_tok1_wrong", "Bearer cct__x",
		"Bearer cct_tok1", "Bearer cct_nope_x", "Bearer " + goodJWT, "Bearer " + saJWT, "Basic YWRtaW46", "Bearer\x00" + adminToken,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		ctx := context.Background()
		r := httptest.NewRequest(http.MethodGet, "https://relay.example/clusters/prod/api", nil)
		r.Header["Authorization"] = []string{h}

		res, err := e.a.DataPath(ctx, r)
		if err == nil || err.Code != http.StatusUnauthorized || err.Reason != api.ReasonUnauthenticated || err.Message == "" {
			t.Fatalf("DataPath(Authorization %q) = %+v, %+v; want 401", h, res, err)
		}

		res, err = e.a.Management(ctx, r)
		tok, _ := bearer(h)
		switch tok {
		case adminToken:
			if err != nil || res.Principal.Kind != api.PrincipalKindAdmin {
				t.Fatalf("Management(Authorization %q) = %+v, %+v; want the admin", h, res, err)
			}
		case valid:
			if err != nil || res.Principal.Kind != api.PrincipalKindToken || res.Principal.ID != "tok1" {
				t.Fatalf("Management(Authorization %q) = %+v, %+v; want token tok1", h, res, err)
			}
		default:
			if err == nil || err.Code != http.StatusUnauthorized || err.Reason != api.ReasonUnauthenticated || err.Message == "" {
				t.Fatalf("Management(Authorization %q) = %+v, %+v; want 401", h, res, err)
			}
		}
	})
}
