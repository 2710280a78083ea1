package relay_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/relay"
)

// apiAs calls the management API with bearer token tok.
func (e *env) apiAs(tok, method, path, body string) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.ts.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := e.client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// token creates an API token with the admin token.
func (e *env) token(role string, expires time.Duration) api.APIToken {
	e.t.Helper()
	code, b := e.api("POST", api.TokensPath, fmt.Sprintf(`{"name":"t-%s","role":%q,"expiresInSeconds":%d}`, strings.ToLower(role), role, int(expires.Seconds())))
	if code != 201 {
		e.t.Fatalf("create %s token: %d %s", role, code, b)
	}
	var t api.APIToken
	if err := json.Unmarshal(b, &t); err != nil || !strings.HasPrefix(t.Token, api.APITokenPrefix) {
		e.t.Fatalf("token answer %s: %v", b, err)
	}
	return t
}

func TestManagementRoles(t *testing.T) {
	e := newEnv(t)
	e.identity("c1")
	reader, contrib := e.token(api.RoleReader, time.Hour), e.token(api.RoleContributor, time.Hour)

	for _, c := range []struct {
		name, tok, method, path, body string
		want                          int
	}{
		{"reader lists", reader.Token, "GET", api.ClustersPath, "", 200},
		{"reader shows", reader.Token, "GET", api.ClusterPath("c1"), "", 200},
		{"reader cannot create", reader.Token, "POST", api.ClustersPath, `{"name":"r1"}`, 403},
		{"reader cannot mint tokens", reader.Token, "POST", api.TokensPath, `{"name":"x","role":"Reader"}`, 403},
		{"contributor creates", contrib.Token, "POST", api.ClustersPath, `{"name":"k1"}`, 201},
		{"contributor cannot assign roles", contrib.Token, "POST", api.RoleAssignmentsPath, `{"role":"Viewer","principalId":"oid-x","cluster":"c1"}`, 403},
		{"contributor cannot mint an Owner token", contrib.Token, "POST", api.TokensPath, `{"name":"x","role":"Owner"}`, 403},
		{"contributor mints a Reader token", contrib.Token, "POST", api.TokensPath, `{"name":"x","role":"Reader"}`, 201},
		{"garbage token", api.APITokenPrefix + "0011223344556677_nope", "GET", api.ClustersPath, "", 401},
		{"no such secret", strings.TrimSuffix(reader.Token, reader.Token[len(reader.Token)-4:]) + "AAAA", "GET", api.ClustersPath, "", 401},
	} {
		if code, b := e.apiAs(c.tok, c.method, c.path, c.body); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, b, c.want)
		}
	}
	code, b := e.apiAs(contrib.Token, "GET", api.WhoAmIPath, "")
	var who api.WhoAmI
	json.Unmarshal(b, &who)
	if code != 200 || who.Principal.Kind != api.PrincipalKindToken || who.Principal.ID != contrib.ID || len(who.Roles) != 1 || who.Roles[0] != api.RoleContributor {
		t.Errorf("whoami: %d %s", code, b)
	}
	// The list shows tokens without their secrets.
	_, b = e.apiAs(reader.Token, "GET", api.TokensPath, "")
	if strings.Contains(string(b), reader.Token) || !strings.Contains(string(b), reader.ID) {
		t.Errorf("token list: %s", b)
	}
	// Revoked and expired tokens stop working at once.
	if code, b := e.api("DELETE", api.TokenPath(contrib.ID), ""); code != 204 {
		t.Fatalf("revoke: %d %s", code, b)
	}
	if code, _ := e.apiAs(contrib.Token, "GET", api.ClustersPath, ""); code != 401 {
		t.Errorf("revoked token: %d, want 401", code)
	}
	e.advance(61 * time.Minute)
	if code, b := e.apiAs(reader.Token, "GET", api.ClustersPath, ""); code != 401 || !strings.Contains(string(b), "expired") {
		t.Errorf("expired token: %d %s, want 401", code, b)
	}
}

// clientCert asks the management API for a relay client certificate with
// bearer tok.
func (e *env) clientCert(tok string) (int, tls.Certificate) {
	e.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	body, _ := json.Marshal(api.ClientCertificateRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	code, b := e.apiAs(tok, "POST", api.ClientCertificatePath, string(body))
	if code != 201 {
		return code, tls.Certificate{}
	}
	var cr api.CertificateResponse
	json.Unmarshal(b, &cr)
	kb, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair([]byte(cr.Certificate), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	if err != nil {
		e.t.Fatal(err)
	}
	return code, pair
}

// Token mode: a relay client certificate issued to an API token admits
// what the token's role allows: Contributor connects, Reader does not; a
// revoked token's certificate stops admitting.
func TestClientCertificateAdmission(t *testing.T) {
	e := newEnv(t)
	var hits atomic.Int64
	e.agent("c1", e.identity("c1"), counted(t, &hits), 1)
	e.waitConnected("c1", 1)
	reader, contrib := e.token(api.RoleReader, time.Hour), e.token(api.RoleContributor, time.Hour)
	_, rc := e.clientCert(reader.Token)
	code, cc := e.clientCert(contrib.Token)
	if code != 201 {
		t.Fatalf("client certificate: %d", code)
	}
	if leaf, _ := x509.ParseCertificate(cc.Certificate[0]); leaf.NotAfter.After(e.clock().Add(61 * time.Minute)) {
		t.Errorf("client certificate lives until %s, beyond the token's expiry", leaf.NotAfter)
	}
	u := e.ts.URL + "/clusters/c1/version"
	if code, _, msg, _ := do(t, e.client(cc), "GET", u, map[string]string{"Authorization": "Bearer sa-token"}); code != 200 {
		t.Errorf("Contributor's certificate: %d %q", code, msg)
	}
	if code, _, _, _ := do(t, e.client(rc), "GET", u, nil); code != 403 {
		t.Errorf("Reader's certificate: %d, want 403", code)
	}
	e.api("DELETE", api.TokenPath(contrib.ID), "")
	if code, _, _, _ := do(t, e.client(cc), "GET", u, nil); code != 403 {
		t.Errorf("revoked token's certificate: %d, want 403", code)
	}
	if code, _ := e.clientCert("not-a-token"); code != 401 {
		t.Errorf("client certificate without a credential: %d, want 401", code)
	}
}

// A long-running request (a watch) ends when the access that admitted it is
// revoked, rather than outliving the revocation.
func TestRevocationEndsSessions(t *testing.T) {
	e := newEnv(t)
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("{}\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	e.agent("c1", e.identity("c1"), up.URL, 1)
	e.waitConnected("c1", 1)
	contrib := e.token(api.RoleContributor, time.Hour)
	_, cc := e.clientCert(contrib.Token)
	resp, err := e.client(cc).Get(e.ts.URL + "/clusters/c1/api/v1/pods?watch=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 3)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || resp.StatusCode != 200 {
		t.Fatalf("watch: %d %v", resp.StatusCode, err)
	}
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); ended <- err }()
	if code, b := e.api("DELETE", api.TokenPath(contrib.ID), ""); code != 204 {
		t.Fatalf("revoke: %d %s", code, b)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch outlived the revocation of the token that opened it")
	}
}

// An API token made by a user whose management role is time-bound ends
// with that role.
func TestTokenNotBeyondCreatorsRole(t *testing.T) {
	e := newEnvConfig(t, relay.Config{Tunnel: testTunnel(), Entra: fakeEntra{}})
	e.assignUntil(api.RoleContributor, "oid-jit", "", e.clock().Add(time.Hour))
	code, b := e.apiAs("u.oid-jit.sig", "POST", api.TokensPath, fmt.Sprintf(`{"name":"jit","role":"Reader","expiresInSeconds":%d}`, 30*24*3600))
	var tok api.APIToken
	if err := json.Unmarshal(b, &tok); code != 201 || err != nil {
		t.Fatalf("create token as a time-bound Contributor: %d %s", code, b)
	}
	if !tok.ExpiresAt.Before(e.clock().Add(time.Hour + time.Minute)) {
		t.Errorf("token expires %s, after its creator's role ends (%s)", tok.ExpiresAt, e.clock().Add(time.Hour))
	}
}

// fakeEntra stands in for the Entra verifier: "u.<oid>.sig" is user <oid>.
type fakeEntra struct{}

func (fakeEntra) Verify(_ context.Context, raw string) (*entra.Identity, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || parts[0] != "u" {
		return nil, entra.ErrNotEntra
	}
	return &entra.Identity{Username: parts[1] + "@contoso.example", ObjectID: parts[1], Expiry: time.Now().Add(time.Hour)}, nil
}

// Revoking an API token revokes the tokens it made.
func TestRevokingATokenRevokesItsChildren(t *testing.T) {
	e := newEnv(t)
	parent := e.token(api.RoleContributor, time.Hour)
	code, b := e.apiAs(parent.Token, "POST", api.TokensPath, `{"name":"child","role":"Reader"}`)
	var child api.APIToken
	if err := json.Unmarshal(b, &child); code != 201 || err != nil {
		t.Fatalf("child token: %d %s", code, b)
	}
	if code, b := e.apiAs(child.Token, "GET", api.ClustersPath, ""); code != 200 {
		t.Fatalf("child before the revoke: %d %s", code, b)
	}
	e.api("DELETE", api.TokenPath(parent.ID), "")
	if code, b := e.apiAs(child.Token, "GET", api.ClustersPath, ""); code != 401 || !strings.Contains(string(b), "was made by API token "+parent.ID) {
		t.Errorf("child after its parent was revoked: %d %s", code, b)
	}
}
