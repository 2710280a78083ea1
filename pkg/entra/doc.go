// Package entra validates Microsoft Entra ID (Azure AD) access tokens, and
// those of any issuer shaped like it, and maps them to a Kubernetes
// identity. It is shared by kube-aad-proxy (package aadproxy) and guard,
// and is meant for every component that accepts Entra tokens.
//
// Commands take the same flags everywhere ([Options]) and start a verifier
// with [Options.Start], which also discovers the issuers in the background
// so that the first requests do not wait for it.
//
// A [Verifier] is configured with tenants and audiences. For each tenant it
// accepts both Entra issuer forms:
//
//	v1: <V1IssuerURL>/<tenant>/       (https://sts.windows.net/<tenant>/)
//	v2: <IssuerURL>/<tenant>/v2.0     (https://login.microsoftonline.com/<tenant>/v2.0)
//
// Discovery (<IssuerURL>/<tenant>[/v2.0]/.well-known/openid-configuration)
// happens lazily per issuer form with github.com/coreos/go-oidc/v3; the
// JWKS it names is fetched by this package's key set, which refreshes on an
// unknown key ID (key rotation) at most once per MinRefreshInterval, so
// that a stream of forged key IDs cannot turn into a stream of JWKS
// fetches. Within that interval of the last fetch a token with an unknown
// key ID is refused at once ([ReasonUnknownKey]) rather than held until
// the next refresh is allowed; only callers that arrive while a refresh is
// in flight wait, for that one fetch. Signatures, issuer and expiry are
// checked by go-oidc; the signature algorithm allow-list refuses "none"
// and HMAC whatever is configured. The identity is made of the claims of
// the verified payload; the unverified parse ([Peek]) only picks the
// issuer whose keys verify the token.
//
// [Verifier.Verify] sorts tokens in three: an identity; a *[Error] with a
// [Reason] (the token claims to come from Entra but is not acceptable); or
// [ErrNotEntra] for every other bearer token (service-account tokens, for
// example), which the caller passes on unchanged for the API server to
// judge.
//
// Groups overage: Entra leaves the groups out of tokens of users in more
// than 200 groups and adds _claim_names/_claim_sources instead. The
// verifier then asks its [GroupResolver] (see package aadproxy/graph) and
// fails closed if there is none or it fails.
package entra
