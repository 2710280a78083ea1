package api

import (
	"net/url"
	"time"
)

// Management API paths of the front door: who the caller is, API tokens,
// relay client certificates and the audit log.
const (
	WhoAmIPath = "/api/v1/whoami"
	// TokensPath lists (GET) and creates (POST) API tokens.
	TokensPath = "/api/v1/tokens"
	// ClientCertificatePath issues (POST) a short-lived relay client
	// certificate for the calling principal: token mode's relay identity,
	// presented beside a service-account token.
	ClientCertificatePath = "/api/v1/clientcertificate"
	// AuditPath reads the relay's audit log (GET; query cluster, since, user, limit).
	AuditPath = "/api/v1/audit"
)

// TokenPath is one API token (GET, DELETE = revoke).
func TokenPath(id string) string { return TokensPath + "/" + url.PathEscape(id) }

// APITokenPrefix starts every API token: cct_<id>_<secret>.
const APITokenPrefix = "cct_"

// Principal kinds: who a verified caller is.
const (
	// PrincipalKindAdmin: the relay's bootstrap admin token.
	PrincipalKindAdmin = "admin"
	// PrincipalKindUser: an Entra (OIDC) user or service principal, by object ID.
	PrincipalKindUser = "user"
	// PrincipalKindToken: an API token, by token ID.
	PrincipalKindToken = "token"
	// PrincipalKindPeer: another replica of a relay fleet, by replica ID,
	// forwarding a request it admitted (HeaderForwardedPrincipal).
	PrincipalKindPeer = "peer"
)

// Principal is a verified caller as the relay sees it.
type Principal struct {
	Kind string `json:"kind"`
	// ID is the object ID (user), token ID (token) or "admin".
	ID string `json:"id"`
	// Name is the user principal name, or the token's name.
	Name   string   `json:"name,omitempty"`
	Groups []string `json:"groups,omitempty"`
	// Via is how the caller proved it: "bearer" or "certificate".
	Via string `json:"via,omitempty"`
}

// WhoAmI answers GET WhoAmIPath.
type WhoAmI struct {
	Principal Principal `json:"principal"`
	// Roles are the management roles the principal holds.
	Roles []string `json:"roles"`
}

// APITokenRequest is the body of POST TokensPath.
type APITokenRequest struct {
	Name string `json:"name"`
	// Role is the token's management role: Owner, Contributor or Reader; at
	// most the creator's own.
	Role string `json:"role"`
	// ExpiresInSeconds is the token's lifetime; 0 means the relay's default
	// (24 h); at most the relay's maximum (90 days).
	ExpiresInSeconds int64 `json:"expiresInSeconds,omitempty"`
}

// APIToken is an API token as the API shows it. Token (the secret) is set
// only in the answer to its creation; the relay keeps only its hash.
type APIToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
	CreatedBy string    `json:"createdBy,omitempty"`
	Token     string    `json:"token,omitempty"`
}

// TokenList answers GET TokensPath.
type TokenList struct {
	Value []APIToken `json:"value"`
}

// ClientCertificateRequest is the body of POST ClientCertificatePath: a CSR
// for a key the client made and keeps.
type ClientCertificateRequest struct {
	CSR string `json:"csr"` // PEM CERTIFICATE REQUEST
}

// Audit record kinds and events.
const (
	AuditRequest = "request" // one request, admitted or refused
	AuditSession = "session" // exec, attach, port-forward: Event start, then end
	AuditStart   = "start"
	AuditEnd     = "end"
)

// AuditRecord is one line of the relay's audit log.
type AuditRecord struct {
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"`            // AuditRequest or AuditSession
	Event string    `json:"event,omitempty"` // sessions: AuditStart or AuditEnd
	// Principal is who called (zero when authentication failed).
	Principal Principal `json:"principal,omitzero"`
	// Impersonate is the Impersonate-User header a token-mode caller sent.
	Impersonate string `json:"impersonate,omitempty"`
	Cluster     string `json:"cluster,omitempty"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	Status      int    `json:"status"`
	// Reason is the Status reason of a refusal.
	Reason     string  `json:"reason,omitempty"`
	BytesIn    int64   `json:"bytesIn"`
	BytesOut   int64   `json:"bytesOut"`
	DurationMS float64 `json:"durationMs"`
	Client     string  `json:"client"`
}

// AuditList answers GET AuditPath, oldest first.
type AuditList struct {
	Value []AuditRecord `json:"value"`
}

// HeaderForwardedPrincipal carries, from one relay replica to the replica
// that holds a cluster's tunnels, the principal the first replica verified
// and admitted: base64url (no padding) of its JSON. The owner honours it
// only from a caller with a peer certificate; the relay removes it from
// every request it passes to a cluster.
const HeaderForwardedPrincipal = "X-Clusterconnect-Principal"

// HeaderForwardedClient carries, with HeaderForwardedPrincipal, the
// address the first replica saw the caller at (an IP address), so that the
// owner passes the real client on to the cluster (X-Forwarded-For, which
// the apiserver's audit log records) rather than the replica's. Honoured and
// removed like HeaderForwardedPrincipal.
const HeaderForwardedClient = "X-Clusterconnect-Client"
