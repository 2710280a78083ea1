package entra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Defaults of [Config].
const (
	DefaultIssuerURL          = "https://login.microsoftonline.com"
	DefaultV1IssuerURL        = "https://sts.windows.net"
	DefaultClockSkew          = time.Minute
	DefaultMinRefreshInterval = 5 * time.Second
	// discoveryRetry is how long a failed discovery is remembered before the
	// next token makes another attempt.
	discoveryRetry = 5 * time.Second
)

// DefaultUsernameClaims is the default [Config.UsernameClaims]: upn (v1
// user tokens), preferred_username (v2), oid (service principals, and
// users of v2 apps without the profile scope).
var DefaultUsernameClaims = []string{"upn", "preferred_username", "oid"}

// DefaultAlgorithms is the default [Config.Algorithms]; Entra signs with RS256.
var DefaultAlgorithms = []string{"RS256"}

// allowedAlgorithms are those Config.Algorithms may name: asymmetric only.
var allowedAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}

// Config configures a [Verifier]. Tenants and Audiences are required; every
// other zero value means the documented default.
type Config struct {
	// IssuerURL is the base of v2 issuers and of discovery for both forms;
	// empty means https://login.microsoftonline.com.
	IssuerURL string
	// V1IssuerURL is the base of v1 issuers; empty means https://sts.windows.net.
	V1IssuerURL string
	// Tenants are the accepted tenant IDs.
	Tenants []string
	// Audiences are the accepted aud values: the server application's client
	// ID and/or its App ID URI (api://…). One match suffices.
	Audiences []string
	// Algorithms are the accepted signature algorithms; empty means RS256.
	// "none" and HMAC (HS*) are refused by NewVerifier.
	Algorithms []string
	// ClockSkew is allowed on exp and nbf; zero means one minute.
	ClockSkew time.Duration
	// UsernameClaims are tried in order for the user name; empty means
	// DefaultUsernameClaims.
	UsernameClaims []string
	// UsernamePrefix and GroupsPrefix are prepended to the mapped user name
	// and each group; empty means none.
	UsernamePrefix, GroupsPrefix string
	// Groups resolves group membership on groups overage; nil means overage
	// tokens are refused.
	Groups GroupResolver
	// HTTPClient fetches discovery documents and JWKS; nil means a client
	// with the system roots and a 30 s timeout.
	HTTPClient *http.Client
	// MinRefreshInterval is the least time between two JWKS fetches of one
	// issuer; zero means 5 s. A token with an unknown key ID within it of
	// the last fetch is refused at once (ReasonUnknownKey), not held.
	MinRefreshInterval time.Duration
	// Metrics records verification metrics; nil records none.
	Metrics *Metrics
	// Logger receives discovery and JWKS events (never token contents); nil
	// discards.
	Logger *slog.Logger
}

// GroupResolver returns the IDs of the groups a user (tenant, object ID) is
// a member of, transitively, for tokens with groups overage.
type GroupResolver interface {
	MemberGroups(ctx context.Context, tenant, oid string) ([]string, error)
}

// Identity is who a verified token speaks for, mapped for Kubernetes.
type Identity struct {
	// Username is the mapped user name (with UsernamePrefix).
	Username string
	// Groups are the group object IDs (with GroupsPrefix), from the token or
	// resolved on overage.
	Groups []string
	// ObjectID and TenantID are the oid and tid claims.
	ObjectID, TenantID string
	// Issuer is the token's issuer; Version is 1 or 2.
	Issuer  string
	Version int
	// Expiry is the token's exp.
	Expiry time.Time
	// GroupsResolved is true when Groups came from the GroupResolver.
	GroupsResolved bool
}

// Extra returns the impersonation extras: oid and tid.
func (id *Identity) Extra() map[string][]string {
	return map[string][]string{"oid": {id.ObjectID}, "tid": {id.TenantID}}
}

// Verifier verifies tokens. It is safe for concurrent use.
type Verifier struct {
	cfg      Config
	v1, v2   string // issuer bases without trailing slash
	issuers  map[string]*issuer
	log      *slog.Logger
	now      func() time.Time
	algs     []string
	userClms []string
}

// issuer is one accepted issuer (one tenant, one form), discovered lazily.
type issuer struct {
	url       string // the iss value
	discovery string // base that /.well-known/openid-configuration is appended to
	tenant    string
	version   int

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	failedAt time.Time
	failErr  error
}

// NewVerifier checks cfg and returns a Verifier. It does no network I/O;
// see [Verifier.Warm].
func NewVerifier(cfg *Config) (*Verifier, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	c := *cfg
	if c.IssuerURL == "" {
		c.IssuerURL = DefaultIssuerURL
	}
	if c.V1IssuerURL == "" {
		c.V1IssuerURL = DefaultV1IssuerURL
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = DefaultClockSkew
	}
	if c.MinRefreshInterval == 0 {
		c.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	for _, u := range []string{c.IssuerURL, c.V1IssuerURL} {
		if !strings.HasPrefix(u, "https://") {
			errs = append(errs, fmt.Errorf("issuer base URL %q: want https://", u))
		}
	}
	if len(c.Tenants) == 0 {
		errs = append(errs, errors.New("at least one tenant ID is required"))
	}
	if len(c.Audiences) == 0 {
		errs = append(errs, errors.New("at least one audience (the server app's client ID or App ID URI) is required"))
	}
	algs := c.Algorithms
	if len(algs) == 0 {
		algs = DefaultAlgorithms
	}
	for _, a := range algs {
		if !slices.Contains(allowedAlgorithms, a) {
			errs = append(errs, fmt.Errorf("signature algorithm %q is not allowed (use one of %s; none and HMAC never are)", a, strings.Join(allowedAlgorithms, ", ")))
		}
	}
	claims := c.UsernameClaims
	if len(claims) == 0 {
		claims = DefaultUsernameClaims
	}
	if c.ClockSkew < 0 || c.ClockSkew > 10*time.Minute {
		errs = append(errs, fmt.Errorf("clock skew %s: want 0 to 10m", c.ClockSkew))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("token verifier: %w", err)
	}
	v := &Verifier{
		cfg:      c,
		v1:       strings.TrimSuffix(c.V1IssuerURL, "/"),
		v2:       strings.TrimSuffix(c.IssuerURL, "/"),
		issuers:  map[string]*issuer{},
		log:      c.Logger,
		now:      time.Now,
		algs:     algs,
		userClms: claims,
	}
	for _, t := range c.Tenants {
		if t == "" || strings.ContainsAny(t, "/?#") {
			return nil, fmt.Errorf("token verifier: tenant %q: want a tenant ID (GUID) or domain", t)
		}
		v1 := &issuer{url: v.v1 + "/" + t + "/", discovery: v.v2 + "/" + t, tenant: t, version: 1}
		v2 := &issuer{url: v.v2 + "/" + t + "/v2.0", discovery: v.v2 + "/" + t + "/v2.0", tenant: t, version: 2}
		v.issuers[v1.url], v.issuers[v2.url] = v1, v2
	}
	return v, nil
}

// Warm runs discovery for every issuer now, so that the first requests do
// not pay for it, and returns the failures (they are retried lazily).
func (v *Verifier) Warm(ctx context.Context) error {
	var errs []error
	for _, is := range v.issuers {
		if _, err := v.verifierFor(ctx, is); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Issuers returns the accepted issuer URLs.
func (v *Verifier) Issuers() []string {
	var out []string
	for u := range v.issuers {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// route classifies an issuer value: one of ours, an Entra-shaped issuer of
// another tenant (unknown), or not Entra at all.
func (v *Verifier) route(iss string) (is *issuer, entra bool) {
	if is := v.issuers[iss]; is != nil {
		return is, true
	}
	if strings.HasPrefix(iss, v.v1+"/") || strings.HasPrefix(iss, v.v2+"/") {
		return nil, true
	}
	return nil, false
}

// Verify verifies raw and maps it to an Identity. It returns ErrNotEntra
// for tokens that are not JWTs of an Entra-shaped issuer, and a *Error for
// Entra-shaped tokens it refuses.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Identity, error) {
	start := time.Now()
	id, err := v.verify(ctx, raw)
	v.cfg.Metrics.observe(time.Since(start).Seconds(), err)
	return id, err
}

func (v *Verifier) verify(ctx context.Context, raw string) (*Identity, error) {
	// The unverified claims only pick the issuer (and word refusals); every
	// claim the identity is made of comes from the verified payload below.
	h, peeked, perr := Peek(raw)
	if peeked == nil {
		return nil, ErrNotEntra
	}
	is, entra := v.route(peeked.Issuer)
	if !entra {
		return nil, ErrNotEntra
	}
	if is == nil {
		return nil, refuse(ReasonUnknownIssuer, "issuer %q is not accepted: its tenant is not configured (accepted tenants: %s)", peeked.Issuer, strings.Join(v.cfg.Tenants, ", "))
	}
	if perr != nil {
		return nil, refuse(ReasonMalformed, "%v", perr)
	}
	if a := h.Alg; !slices.Contains(v.algs, a) {
		return nil, refuse(ReasonAlgorithm, "signature algorithm %q is refused (accepted: %s)", a, strings.Join(v.algs, ", "))
	}
	ov, err := v.verifierFor(ctx, is)
	if err != nil {
		return nil, err
	}
	vctx, slot := withErrSlot(ctx)
	tok, err := ov.Verify(vctx, raw)
	if err != nil {
		var exp *oidc.TokenExpiredError
		switch {
		case *slot != nil:
			return nil, *slot
		case errors.As(err, &exp):
			return nil, refuse(ReasonExpired, "the token expired at %s (now %s, allowed skew %s); get a new one", exp.Expiry.UTC().Format(time.RFC3339), v.now().UTC().Format(time.RFC3339), v.cfg.ClockSkew)
		case strings.Contains(err.Error(), "before the nbf"):
			return nil, v.notYetValid(peeked)
		default:
			return nil, refuse(ReasonMalformed, "%v", err)
		}
	}
	// tok holds the payload the key set verified the signature of.
	var payload json.RawMessage
	if err := tok.Claims(&payload); err != nil {
		return nil, refuse(ReasonMalformed, "verified claims: %v", err)
	}
	c, err := ParseClaims(payload)
	if err != nil {
		return nil, refuse(ReasonMalformed, "%v", err)
	}
	if c.Issuer != is.url {
		return nil, refuse(ReasonMalformed, "the verified claims name issuer %q, not %q", c.Issuer, is.url)
	}
	if c.Expiry.IsZero() {
		return nil, refuse(ReasonMalformed, "the token has no exp claim")
	}
	if now := v.now(); c.Expiry.Before(now.Add(-v.cfg.ClockSkew)) {
		return nil, refuse(ReasonExpired, "the token expired at %s (now %s, allowed skew %s); get a new one", c.Expiry.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.cfg.ClockSkew)
	}
	// go-oidc allows 5 minutes on nbf; hold it to the configured skew.
	if !c.NotBefore.IsZero() && c.NotBefore.After(v.now().Add(v.cfg.ClockSkew)) {
		return nil, v.notYetValid(c)
	}
	if !slices.ContainsFunc(c.Audience, func(a string) bool { return slices.Contains(v.cfg.Audiences, a) }) {
		return nil, refuse(ReasonWrongAudience, "the token is for audience %q, not for this cluster (accepted: %s); request it for the server application's scope", c.Audience, strings.Join(v.cfg.Audiences, ", "))
	}
	return v.identity(ctx, is, c)
}

func (v *Verifier) notYetValid(c *Claims) error {
	return refuse(ReasonNotYetValid, "the token is not valid before %s (now %s, allowed skew %s); check the clocks", c.NotBefore.UTC().Format(time.RFC3339), v.now().UTC().Format(time.RFC3339), v.cfg.ClockSkew)
}

// identity maps verified claims to an Identity.
func (v *Verifier) identity(ctx context.Context, is *issuer, c *Claims) (*Identity, error) {
	if c.TenantID != is.tenant {
		return nil, refuse(ReasonInvalidIdentity, "tid %q does not match the issuer's tenant %q", c.TenantID, is.tenant)
	}
	if c.ObjectID == "" {
		return nil, refuse(ReasonInvalidIdentity, "the token has no oid claim")
	}
	var name string
	for _, claim := range v.userClms {
		if s, ok := c.String(claim); ok {
			name = s
			break
		}
	}
	if name == "" {
		return nil, refuse(ReasonInvalidIdentity, "the token has none of the user name claims %s", strings.Join(v.userClms, ", "))
	}
	id := &Identity{
		Username: v.cfg.UsernamePrefix + name,
		ObjectID: c.ObjectID,
		TenantID: c.TenantID,
		Issuer:   c.Issuer,
		Version:  is.version,
		Expiry:   c.Expiry,
	}
	groups := c.Groups
	if c.HasGroupsOverage() && len(groups) == 0 {
		if v.cfg.Groups == nil {
			return nil, refuse(ReasonGroupsOverage, "user %s is in too many groups for the token to carry them (groups overage), and no Graph endpoint is configured to look them up; configure one, or request a token with fewer groups", name)
		}
		gs, err := v.cfg.Groups.MemberGroups(ctx, c.TenantID, c.ObjectID)
		if err != nil {
			return nil, &Error{Reason: ReasonGroupsOverage, Err: fmt.Errorf("user %s is in too many groups for the token to carry them (groups overage), and looking them up failed: %w", name, err)}
		}
		groups, id.GroupsResolved = gs, true
	}
	for _, g := range groups {
		if g == "" {
			continue
		}
		id.Groups = append(id.Groups, v.cfg.GroupsPrefix+g)
	}
	if strings.HasPrefix(id.Username, "system:") {
		return nil, refuse(ReasonInvalidIdentity, "user name %q is in the reserved system: namespace", id.Username)
	}
	for _, g := range id.Groups {
		if strings.HasPrefix(g, "system:") {
			return nil, refuse(ReasonInvalidIdentity, "group %q is in the reserved system: namespace", g)
		}
	}
	return id, nil
}

// verifierFor discovers is on first use; a failure is remembered for a few
// seconds so that a down issuer is not hammered by every request.
func (v *Verifier) verifierFor(ctx context.Context, is *issuer) (*oidc.IDTokenVerifier, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.verifier != nil {
		return is.verifier, nil
	}
	if is.failErr != nil && time.Since(is.failedAt) < discoveryRetry {
		return nil, is.failErr
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	dctx = oidc.ClientContext(dctx, v.cfg.HTTPClient)
	// Entra's v1 discovery document lives under login.microsoftonline.com
	// but names the sts.windows.net issuer.
	dctx = oidc.InsecureIssuerURLContext(dctx, is.url)
	p, err := oidc.NewProvider(dctx, is.discovery)
	if err == nil {
		var meta struct {
			JWKS string `json:"jwks_uri"`
		}
		if err = p.Claims(&meta); err == nil && meta.JWKS == "" {
			err = errors.New("the discovery document has no jwks_uri")
		}
		if err == nil {
			ks := newKeySet(meta.JWKS, v.cfg.HTTPClient, v.algs, v.cfg.MinRefreshInterval, func() time.Time { return v.now() }, v.cfg.Metrics, v.log.With("issuer", is.url))
			is.verifier = oidc.NewVerifier(is.url, ks, &oidc.Config{
				SkipClientIDCheck:    true, // several audiences: checked by Verify
				SupportedSigningAlgs: v.algs,
				Now:                  func() time.Time { return v.now().Add(-v.cfg.ClockSkew) },
			})
			v.log.Info("issuer discovered", "issuer", is.url, "jwks", meta.JWKS)
			return is.verifier, nil
		}
	}
	is.failedAt = time.Now()
	is.failErr = refuse(ReasonIssuerUnavailable, "discovery of issuer %s at %s/.well-known/openid-configuration failed: %v", is.url, is.discovery, err)
	v.log.Warn("issuer discovery failed; retrying on a later request", "issuer", is.url, "err", err)
	return nil, is.failErr
}
