// Package oidc is a local OpenID Connect issuer for tests and the demo that
// behaves like Microsoft Entra ID where kube-aad-proxy and connectctl look:
//
//   - per-tenant discovery for both issuer forms: v2
//     (<URL>/<tenant>/v2.0/.well-known/openid-configuration, issuer
//     <URL>/<tenant>/v2.0) and v1 (<URL>/<tenant>/.well-known/openid-configuration,
//     issuer <URL>/sts/<tenant>/, standing in for https://sts.windows.net/<tenant>/);
//   - a JWKS with key rotation ([Issuer.RotateKey], [Issuer.DropOldKeys]);
//   - a token endpoint for the client-credentials, device-code and
//     refresh-token grants, and a device authorization endpoint;
//   - a Graph-style POST <URL>/graph/v1.0/users/<oid>/getMemberObjects that
//     answers with the groups set by [Issuer.SetMemberGroups] for callers
//     holding a client-credentials token of this issuer.
//
// [Issuer.Mint] signs Entra-shaped v1 and v2 access tokens (upn or
// preferred_username, oid, tid, groups, ver), and can produce the bad ones
// tests need: expired, alg "none", HMAC-signed, tampered.
//
// Everything is served over real TLS on 127.0.0.1 with a fresh self-signed
// certificate ([Issuer.CAPEM]).
package oidc

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Options configure [Start]; nil means defaults.
type Options struct {
	// Addr is the listen address; empty means 127.0.0.1:0.
	Addr string
	// Clients are the registered confidential clients (client ID → secret)
	// allowed to use the client-credentials grant.
	Clients map[string]string
	// DeviceVersion is the token version (1 or 2) issued by the device-code
	// and refresh grants; zero means 2.
	DeviceVersion int
	// AutoApprove, when set, approves every device code on its first poll
	// as this user, so that a device-code login needs no human (the demo).
	AutoApprove *User
	// Logger receives one line per request; nil discards.
	Logger *slog.Logger
}

// User is who a device-code login signs in as.
type User struct {
	Tenant            string
	UPN               string // v1 tokens carry it as upn
	PreferredUsername string // v2 tokens carry it as preferred_username; empty means UPN
	OID               string
	Groups            []string
}

// Issuer is a running local issuer.
type Issuer struct {
	// URL is https://127.0.0.1:<port>, the base of every endpoint.
	URL string
	// CAPEM is the self-signed serving certificate, to trust.
	CAPEM []byte

	opts *Options
	srv  *http.Server
	ln   net.Listener
	log  *slog.Logger
	done chan struct{}

	mu          sync.Mutex
	keys        []*signingKey // last is the current signer
	groups      map[string][]string
	devices     map[string]*deviceGrant // device_code → grant
	refresh     map[string]refreshGrant
	appTokens   map[string]bool // client-credentials tokens handed out
	jwksFetches int
	graphCalls  int
	deviceAuths int
	tokenCalls  map[string]int // grant type → count
}

type signingKey struct {
	kid  string
	priv *rsa.PrivateKey
}

type deviceGrant struct {
	userCode string
	clientID string
	scope    string
	tenant   string
	user     *User
	denied   bool
	expires  time.Time
}

type refreshGrant struct {
	clientID, scope, tenant string
	user                    User
}

// Start starts an issuer. Stop it with [Issuer.Close].
func Start(opts *Options) (*Issuer, error) {
	if opts == nil {
		opts = &Options{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	cert, caPEM, err := selfSigned()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("oidc issuer: listen on %s: %w", addr, err)
	}
	i := &Issuer{
		URL:        "https://" + ln.Addr().String(),
		CAPEM:      caPEM,
		opts:       opts,
		ln:         ln,
		log:        log,
		done:       make(chan struct{}),
		groups:     map[string][]string{},
		devices:    map[string]*deviceGrant{},
		refresh:    map[string]refreshGrant{},
		appTokens:  map[string]bool{},
		tokenCalls: map[string]int{},
	}
	if err := i.RotateKey(); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", i.discovery(2))
	mux.HandleFunc("GET /{tenant}/.well-known/openid-configuration", i.discovery(1))
	mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", i.jwks)
	mux.HandleFunc("GET /{tenant}/discovery/keys", i.jwks)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", i.token)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/devicecode", i.deviceCode)
	mux.HandleFunc("POST /graph/v1.0/users/{oid}/getMemberObjects", i.memberObjects)
	i.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(i.done)
		i.srv.ServeTLS(ln, "", "")
	}()
	return i, nil
}

// Close stops the server and waits for it.
func (i *Issuer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := i.srv.Shutdown(ctx)
	if err != nil {
		i.srv.Close()
	}
	<-i.done
	return err
}

// V1Issuer is the v1 issuer of tenant: <URL>/sts/<tenant>/.
func (i *Issuer) V1Issuer(tenant string) string { return i.URL + "/sts/" + tenant + "/" }

// V2Issuer is the v2 issuer of tenant: <URL>/<tenant>/v2.0.
func (i *Issuer) V2Issuer(tenant string) string { return i.URL + "/" + tenant + "/v2.0" }

// V1Base is what kube-aad-proxy's --v1-issuer-url is set to for this issuer.
func (i *Issuer) V1Base() string { return i.URL + "/sts" }

// GraphURL is the base of the Graph-style endpoint.
func (i *Issuer) GraphURL() string { return i.URL + "/graph" }

// RotateKey adds a new signing key, which signs every later token; the old
// keys stay in the JWKS until DropOldKeys, as Entra keeps them for a while.
func (i *Issuer) RotateKey() error {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.keys = append(i.keys, &signingKey{kid: randomID(8), priv: priv})
	return nil
}

// DropOldKeys removes every key but the current one from the JWKS.
func (i *Issuer) DropOldKeys() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.keys = i.keys[len(i.keys)-1:]
}

// KeyID is the kid of the current signing key.
func (i *Issuer) KeyID() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.keys[len(i.keys)-1].kid
}

// SetMemberGroups sets the groups the Graph endpoint reports for oid.
func (i *Issuer) SetMemberGroups(oid string, groups []string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.groups[oid] = append([]string(nil), groups...)
}

// Stats counts requests by kind, for tests that check caching.
type Stats struct {
	JWKSFetches, GraphCalls, DeviceAuthorizations int
	// TokenCalls counts token endpoint calls by grant type.
	TokenCalls map[string]int
}

// Stats returns the request counters.
func (i *Issuer) Stats() Stats {
	i.mu.Lock()
	defer i.mu.Unlock()
	tc := map[string]int{}
	for k, v := range i.tokenCalls {
		tc[k] = v
	}
	return Stats{JWKSFetches: i.jwksFetches, GraphCalls: i.graphCalls, DeviceAuthorizations: i.deviceAuths, TokenCalls: tc}
}

// Token describes a token to mint. Zero fields get Entra-like defaults.
type Token struct {
	// Version is 1 (iss <URL>/sts/<tenant>/, upn) or 2 (iss
	// <URL>/<tenant>/v2.0, preferred_username); zero means 2.
	Version int
	Tenant  string
	// Issuer overrides the issuer derived from Version and Tenant.
	Issuer   string
	Audience string
	// UPN goes into upn (v1) or preferred_username (v2).
	UPN    string
	OID    string
	Groups []string
	// Overage replaces groups with the _claim_names/_claim_sources pointer
	// Entra sends for users in more than 200 groups.
	Overage bool
	// TTL is the lifetime from now; zero means one hour. Negative gives an
	// expired token.
	TTL time.Duration
	// NotBefore shifts nbf from now (positive: not valid yet).
	NotBefore time.Duration
	// Alg is RS256 (default), "none" (unsigned) or "HS256" (HMAC keyed
	// with the current public key's modulus, the classic confusion attack).
	Alg string
	// Extra claims, merged last.
	Extra map[string]any
}

// Claims returns the claims Mint would sign for t.
func (i *Issuer) Claims(t Token) map[string]any {
	now := time.Now()
	ver := t.Version
	if ver == 0 {
		ver = 2
	}
	ttl := t.TTL
	if ttl == 0 {
		ttl = time.Hour
	}
	iss := t.Issuer
	if iss == "" {
		iss = i.V2Issuer(t.Tenant)
		if ver == 1 {
			iss = i.V1Issuer(t.Tenant)
		}
	}
	c := map[string]any{
		"iss": iss,
		"aud": t.Audience,
		"sub": "sub-" + t.OID,
		"iat": now.Add(-time.Minute).Unix(),
		"nbf": now.Add(-time.Minute + t.NotBefore).Unix(),
		"exp": now.Add(ttl).Unix(),
		"oid": t.OID,
		"tid": t.Tenant,
		"uti": randomID(16), // Entra's unique token identifier
	}
	if ver == 1 {
		c["ver"] = "1.0"
		if t.UPN != "" {
			c["upn"] = t.UPN
			c["unique_name"] = t.UPN
		}
	} else {
		c["ver"] = "2.0"
		if t.UPN != "" {
			c["preferred_username"] = t.UPN
		}
	}
	switch {
	case t.Overage:
		// What Entra sends (with a graph.windows.net endpoint); verifiers
		// must not call that endpoint but resolve the groups themselves.
		c["_claim_names"] = map[string]any{"groups": "src1"}
		c["_claim_sources"] = map[string]any{"src1": map[string]any{
			"endpoint": i.URL + "/graph/v1.0/users/" + t.OID + "/getMemberObjects",
		}}
	case t.Groups != nil:
		c["groups"] = t.Groups
	}
	for k, v := range t.Extra {
		c[k] = v
	}
	return c
}

// Mint returns a signed token for t.
func (i *Issuer) Mint(t Token) (string, error) {
	return i.Sign(i.Claims(t), t.Alg)
}

// MustMint is Mint that panics, for test tables.
func (i *Issuer) MustMint(t Token) string {
	s, err := i.Mint(t)
	if err != nil {
		panic(err)
	}
	return s
}

// Sign signs arbitrary claims with alg (see [Token.Alg]) and the current key.
func (i *Issuer) Sign(claims map[string]any, alg string) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	i.mu.Lock()
	key := i.keys[len(i.keys)-1]
	i.mu.Unlock()
	b64 := base64.RawURLEncoding.EncodeToString
	switch alg {
	case "", "RS256":
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key.priv, KeyID: key.kid}},
			(&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			return "", err
		}
		jws, err := signer.Sign(payload)
		if err != nil {
			return "", err
		}
		return jws.CompactSerialize()
	case "none":
		return b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(payload) + ".", nil
	case "HS256":
		head := b64([]byte(fmt.Sprintf(`{"alg":"HS256","typ":"JWT","kid":%q}`, key.kid))) + "." + b64(payload)
		m := hmac.New(sha256.New, key.priv.PublicKey.N.Bytes())
		m.Write([]byte(head))
		return head + "." + b64(m.Sum(nil)), nil
	default:
		return "", fmt.Errorf("oidc issuer: alg %q: want RS256, none or HS256", alg)
	}
}

// Tamper changes a claim of a signed token without re-signing it.
func Tamper(token, claim string, value any) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", err
	}
	c[claim] = value
	b, _ := json.Marshal(c)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, "."), nil
}

func (i *Issuer) discovery(version int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t := r.PathValue("tenant")
		doc := map[string]any{
			"issuer":                                i.V2Issuer(t),
			"jwks_uri":                              i.URL + "/" + t + "/discovery/v2.0/keys",
			"token_endpoint":                        i.URL + "/" + t + "/oauth2/v2.0/token",
			"device_authorization_endpoint":         i.URL + "/" + t + "/oauth2/v2.0/devicecode",
			"authorization_endpoint":                i.URL + "/" + t + "/oauth2/v2.0/authorize",
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"response_types_supported":              []string{"code", "id_token", "code id_token", "token id_token"},
			"subject_types_supported":               []string{"pairwise"},
			"tenant_region_scope":                   "EU",
		}
		if version == 1 {
			doc["issuer"] = i.V1Issuer(t)
			doc["jwks_uri"] = i.URL + "/" + t + "/discovery/keys"
		}
		writeJSON(w, http.StatusOK, doc)
	}
}

func (i *Issuer) jwks(w http.ResponseWriter, _ *http.Request) {
	i.mu.Lock()
	i.jwksFetches++
	var set jose.JSONWebKeySet
	for _, k := range i.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: "RS256", Use: "sig"})
	}
	i.mu.Unlock()
	writeJSON(w, http.StatusOK, set)
}

func (i *Issuer) countToken(grant string) {
	i.mu.Lock()
	i.tokenCalls[grant]++
	i.mu.Unlock()
}

// token is the token endpoint.
func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	grant := r.PostForm.Get("grant_type")
	i.countToken(grant)
	clientID, secret, ok := r.BasicAuth()
	if !ok {
		clientID, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	switch grant {
	case "client_credentials":
		if want, ok := i.opts.Clients[clientID]; !ok || secret != want {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
			return
		}
		scope := r.PostForm.Get("scope")
		tok, err := i.Mint(Token{Tenant: tenant, Audience: strings.TrimSuffix(scope, "/.default"), OID: "app-" + clientID,
			Extra: map[string]any{"appid": clientID, "azp": clientID, "roles": []string{"GroupMember.Read.All"}}})
		if err != nil {
			oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
			return
		}
		i.mu.Lock()
		i.appTokens[tok] = true
		i.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3599})
	case "urn:ietf:params:oauth:grant-type:device_code":
		i.mu.Lock()
		g := i.devices[r.PostForm.Get("device_code")]
		if g != nil && g.user == nil && !g.denied && i.opts.AutoApprove != nil {
			u := *i.opts.AutoApprove
			g.user = &u
		}
		i.mu.Unlock()
		switch {
		case g == nil || g.clientID != clientID:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70000: unknown device code")
		case time.Now().After(g.expires):
			oauthError(w, http.StatusBadRequest, "expired_token", "AADSTS70020: the device code expired")
		case g.denied:
			oauthError(w, http.StatusBadRequest, "access_denied", "AADSTS70000: the user declined")
		case g.user == nil:
			oauthError(w, http.StatusBadRequest, "authorization_pending", "AADSTS70016: pending end-user authorization")
		default:
			i.mu.Lock()
			delete(i.devices, r.PostForm.Get("device_code"))
			i.mu.Unlock()
			i.userToken(w, refreshGrant{clientID: clientID, scope: g.scope, tenant: g.tenant, user: *g.user})
		}
	case "refresh_token":
		i.mu.Lock()
		g, ok := i.refresh[r.PostForm.Get("refresh_token")]
		delete(i.refresh, r.PostForm.Get("refresh_token"))
		i.mu.Unlock()
		if !ok || g.clientID != clientID {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70000: the refresh token is invalid or was used")
			return
		}
		i.userToken(w, g)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type "+grant+" is not supported")
	}
}

// userToken answers a device-code or refresh grant with an access token
// for the scope's resource and a one-time refresh token.
func (i *Issuer) userToken(w http.ResponseWriter, g refreshGrant) {
	aud := g.scope
	for _, s := range strings.Fields(g.scope) {
		if strings.HasSuffix(s, "/.default") {
			aud = strings.TrimSuffix(s, "/.default")
		}
	}
	ver := i.opts.DeviceVersion
	tenant := g.user.Tenant
	if tenant == "" {
		tenant = g.tenant
	}
	upn := g.user.UPN
	if ver != 1 && g.user.PreferredUsername != "" {
		upn = g.user.PreferredUsername
	}
	tok, err := i.Mint(Token{Version: ver, Tenant: tenant, Audience: aud, UPN: upn, OID: g.user.OID, Groups: g.user.Groups})
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	rt := randomID(24)
	i.mu.Lock()
	i.refresh[rt] = g
	i.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3599,
		"refresh_token": rt, "scope": g.scope})
}

// deviceCode is the device authorization endpoint.
func (i *Issuer) deviceCode(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	clientID := r.PostForm.Get("client_id")
	if clientID == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "client_id is required")
		return
	}
	g := &deviceGrant{userCode: strings.ToUpper(randomID(6))[:8], clientID: clientID, scope: r.PostForm.Get("scope"),
		tenant: r.PathValue("tenant"), expires: time.Now().Add(15 * time.Minute)}
	code := randomID(24)
	i.mu.Lock()
	i.devices[code] = g
	i.deviceAuths++
	i.mu.Unlock()
	verify := i.URL + "/devicelogin"
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code": code, "user_code": g.userCode, "verification_uri": verify,
		"expires_in": 900, "interval": 1,
		"message": fmt.Sprintf("To sign in, use a web browser to open the page %s and enter the code %s to authenticate.", verify, g.userCode),
	})
}

// Approve signs in user for the pending device login with userCode, as a
// person would at the verification page. It reports whether the code was
// pending.
func (i *Issuer) Approve(userCode string, user User) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, g := range i.devices {
		if g.userCode == userCode && g.user == nil {
			g.user = &user
			return true
		}
	}
	return false
}

// Deny declines the pending device login with userCode.
func (i *Issuer) Deny(userCode string) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, g := range i.devices {
		if g.userCode == userCode && g.user == nil {
			g.denied = true
			return true
		}
	}
	return false
}

// memberObjects is the Graph-style getMemberObjects: POST with
// {"securityEnabledOnly": bool} and an app token, answer {"value": [ids]}.
func (i *Issuer) memberObjects(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	var body struct {
		SecurityEnabledOnly *bool `json:"securityEnabledOnly"`
	}
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body)
	i.mu.Lock()
	i.graphCalls++
	app := i.appTokens[tok]
	groups, known := i.groups[r.PathValue("oid")]
	i.mu.Unlock()
	switch {
	case !app:
		graphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token is empty or not issued by this tenant's token endpoint.")
	case err != nil || body.SecurityEnabledOnly == nil:
		graphError(w, http.StatusBadRequest, "Request_BadRequest", "body must be {\"securityEnabledOnly\": true|false}")
	case !known:
		graphError(w, http.StatusNotFound, "Request_ResourceNotFound", fmt.Sprintf("Resource '%s' does not exist or one of its queried reference-property objects are not present.", r.PathValue("oid")))
	default:
		if groups == nil {
			groups = []string{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(Edm.String)", "value": groups})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, code int, errCode, desc string) {
	writeJSON(w, code, map[string]any{"error": errCode, "error_description": desc})
}

func graphError(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": errCode, "message": msg}})
}

func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
