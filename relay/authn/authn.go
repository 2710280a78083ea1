// Package authn tells who is calling the relay, before anything else
// happens: the bootstrap admin token, an API token (cct_…), an Entra ID
// (OIDC) access token, or a relay client certificate (token mode). It only
// authenticates; relay/access decides what the principal may do.
package authn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/relay/access"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/secret"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// Verifier verifies Entra access tokens; *entra.Verifier is one.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*entra.Identity, error)
}

// Config wires an Authenticator. Store and CA are required.
type Config struct {
	Store store.Store
	// AdminToken is the bootstrap admin token; empty means none.
	AdminToken string
	// CA verifies relay client certificates.
	CA *clusterca.CA
	// Entra verifies users' access tokens; nil turns Entra sign-in off.
	Entra Verifier
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Authenticator authenticates callers. It is safe for concurrent use.
type Authenticator struct {
	cfg       Config
	adminHash string

	// verified caches relay client certificates that verified, by their
	// DER: a connection presents the same one on every request, and a
	// chain verification per request would dominate the data path.
	mu       sync.Mutex
	verified map[string]verifiedCert
}

type verifiedCert struct {
	p        api.Principal
	notAfter time.Time
}

// maxVerified bounds the certificate cache; when full it starts over.
const maxVerified = 10_000

// New returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Store == nil || cfg.CA == nil {
		return nil, errors.New("authn: Store and CA are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Authenticator{cfg: cfg, verified: map[string]verifiedCert{}}
	if cfg.AdminToken != "" {
		a.adminHash = secret.Hash(cfg.AdminToken)
	}
	return a, nil
}

// EntraEnabled reports whether Entra sign-in is configured.
func (a *Authenticator) EntraEnabled() bool { return a.cfg.Entra != nil }

// Error is a refused credential: 401 with a Status reason and a message
// that says what to do, or 503 when a dependency (store, issuer) failed.
type Error struct {
	Code    int
	Reason  string
	Message string
}

func (e *Error) Error() string { return e.Message }

func unauthenticated(format string, args ...any) *Error {
	return &Error{Code: http.StatusUnauthorized, Reason: api.ReasonUnauthenticated, Message: fmt.Sprintf(format, args...)}
}

// Result is an authenticated caller.
type Result struct {
	Principal api.Principal
	// Expires is when the credential stops being valid (zero: the admin token).
	Expires time.Time
}

// apiTokenID splits cct_<id>_<secret>.
func apiTokenID(tok string) (string, bool) {
	rest, ok := strings.CutPrefix(tok, api.APITokenPrefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, "_")
	return id, ok && id != ""
}

// looksLikeJWT reports whether tok has the three segments of a JWS.
func looksLikeJWT(tok string) bool { return strings.Count(tok, ".") == 2 }

const managementHelp = "the management API needs a relay credential as Authorization: Bearer <token>: the relay's admin token, an API token (connectctl tokens create), or an Entra sign-in (connectctl login --entra)"

// Management authenticates a management API call by its bearer token: the
// admin token, an API token, or an Entra access token.
func (a *Authenticator) Management(ctx context.Context, r *http.Request) (Result, *Error) {
	tok, ok := secret.Bearer(r)
	if !ok {
		return Result{}, unauthenticated("no credential: %s", managementHelp)
	}
	if a.adminHash != "" && secret.Matches(tok, a.adminHash) {
		return Result{Principal: api.Principal{Kind: api.PrincipalKindAdmin, ID: "admin", Name: "admin", Via: "bearer"}}, nil
	}
	if id, ok := apiTokenID(tok); ok {
		return a.apiToken(ctx, id, tok)
	}
	if looksLikeJWT(tok) && a.cfg.Entra != nil {
		return a.entra(ctx, tok, managementHelp)
	}
	return Result{}, unauthenticated("the bearer token is not a credential of this relay: %s", managementHelp)
}

func (a *Authenticator) apiToken(ctx context.Context, id, tok string) (Result, *Error) {
	t, err := a.cfg.Store.GetToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !secret.Matches(tok, t.Hash)) {
		return Result{}, unauthenticated("API token %s is not known to this relay (revoked, or never issued here): create one with `connectctl tokens create`", id)
	}
	if err != nil {
		return Result{}, &Error{Code: http.StatusServiceUnavailable, Reason: "ServiceUnavailable", Message: "relay store unavailable: retry"}
	}
	if !a.cfg.Now().Before(t.ExpiresAt) {
		return Result{}, unauthenticated("API token %s (%s) expired on %s: create a new one with `connectctl tokens create`", id, t.Name, t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if parent, revoked, err := access.TokenRevoked(ctx, a.cfg.Store, t, a.cfg.Now()); err != nil {
		return Result{}, &Error{Code: http.StatusServiceUnavailable, Reason: "ServiceUnavailable", Message: "relay store unavailable: retry"}
	} else if revoked {
		return Result{}, unauthenticated("API token %s (%s) was made by API token %s, which was revoked or expired: create a new one with `connectctl tokens create`", id, t.Name, parent)
	}
	return Result{Principal: api.Principal{Kind: api.PrincipalKindToken, ID: t.ID, Name: t.Name, Via: "bearer"}, Expires: t.ExpiresAt}, nil
}

func (a *Authenticator) entra(ctx context.Context, tok, help string) (Result, *Error) {
	id, err := a.cfg.Entra.Verify(ctx, tok)
	if err != nil {
		if errors.Is(err, entra.ErrNotEntra) {
			return Result{}, unauthenticated("the bearer token is not an Entra token of this relay's issuer (a service-account token?): %s", help)
		}
		if entra.ReasonOf(err) == entra.ReasonIssuerUnavailable {
			return Result{}, &Error{Code: http.StatusServiceUnavailable, Reason: "ServiceUnavailable", Message: "cannot verify the Entra token now (the issuer is unreachable): retry"}
		}
		return Result{}, unauthenticated("Entra token refused: %v; sign in again (connectctl login --entra, or connectctl get-token)", err)
	}
	if id.ObjectID == "" {
		return Result{}, unauthenticated("Entra token has no oid claim: the relay assigns roles to object IDs")
	}
	return Result{Principal: api.Principal{Kind: api.PrincipalKindUser, ID: id.ObjectID, Name: id.Username, Groups: id.Groups, Via: "bearer"}, Expires: id.Expiry}, nil
}

const dataHelp = "a request to a cluster needs a relay identity: an Entra access token (connectctl get-token), or a relay client certificate beside a service-account token (connectctl kubeconfig NAME --token …, which uses connectctl kube-credential)"

// DataPath authenticates a request to a cluster. A relay client
// certificate identifies the caller and the bearer token (for the cluster's
// API server) travels on untouched; otherwise the bearer token must be an
// Entra access token, which also travels on (kube-aad-proxy verifies it
// again and impersonates).
func (a *Authenticator) DataPath(ctx context.Context, r *http.Request) (Result, *Error) {
	var certErr *Error
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		now := a.cfg.Now()
		raw := r.TLS.PeerCertificates[0].Raw
		a.mu.Lock()
		v, ok := a.verified[string(raw)] // no copy of the DER per request

		a.mu.Unlock()
		if ok && now.Before(v.notAfter) && !now.Before(r.TLS.PeerCertificates[0].NotBefore) {
			return Result{Principal: v.p, Expires: v.notAfter}, nil
		}
		p, notAfter, err := a.cfg.CA.VerifyPrincipal(r.TLS.PeerCertificates, now)
		switch {
		case err == nil:
			a.mu.Lock()
			if len(a.verified) >= maxVerified {
				clear(a.verified)
			}
			a.verified[string(raw)] = verifiedCert{p, notAfter}
			a.mu.Unlock()
			return Result{Principal: p, Expires: notAfter}, nil
		case errors.Is(err, clusterca.ErrExpired):
			certErr = unauthenticated("the relay client certificate expired on %s: get a new one (connectctl kube-credential does so by itself)", notAfter.UTC().Format(time.RFC3339))
		case errors.Is(err, clusterca.ErrNoIdentity):
			certErr = unauthenticated("the client certificate is not a relay client certificate (a cluster's own certificate cannot call its API through the relay): %s", dataHelp)
		default:
			certErr = unauthenticated("client certificate refused: %v; %s", err, dataHelp)
		}
	}
	tok, ok := secret.Bearer(r)
	if ok && looksLikeJWT(tok) && a.cfg.Entra != nil {
		res, err := a.entra(ctx, tok, dataHelp)
		if err == nil || certErr == nil {
			return res, err
		}
	}
	if certErr != nil {
		return Result{}, certErr
	}
	if !ok {
		return Result{}, unauthenticated("no credential: %s", dataHelp)
	}
	if a.cfg.Entra == nil {
		return Result{}, unauthenticated("a bearer token alone is not a relay identity on this relay (Entra sign-in is off): %s", dataHelp)
	}
	return Result{}, unauthenticated("the bearer token is not a JWT and no relay client certificate came with it: %s", dataHelp)
}
