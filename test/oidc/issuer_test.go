package oidc

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDiscoveryBothForms checks the documents with go-oidc, as the
// verifier reads them: v2 names its own issuer, v1 the sts form.
func TestDiscoveryBothForms(t *testing.T) {
	iss, err := Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(iss.CAPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	ctx := gooidc.ClientContext(t.Context(), &http.Client{Transport: tr})
	p, err := gooidc.NewProvider(ctx, iss.V2Issuer("t1"))
	if err != nil {
		t.Fatal(err)
	}
	if ep := p.Endpoint(); ep.DeviceAuthURL != iss.URL+"/t1/oauth2/v2.0/devicecode" || ep.TokenURL != iss.URL+"/t1/oauth2/v2.0/token" {
		t.Errorf("v2 endpoints %+v", ep)
	}
	v1ctx := gooidc.InsecureIssuerURLContext(ctx, iss.V1Issuer("t1"))
	if _, err := gooidc.NewProvider(v1ctx, iss.URL+"/t1"); err != nil {
		t.Errorf("v1 discovery: %v", err)
	}
	// A token verifies against the discovered keys.
	raw := iss.MustMint(Token{Tenant: "t1", Audience: "aud", UPN: "u", OID: "o"})
	if _, err := p.Verifier(&gooidc.Config{ClientID: "aud"}).Verify(ctx, raw); err != nil {
		t.Errorf("verify a minted token: %v", err)
	}
	// The Graph endpoint wants an app token of this issuer.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, iss.GraphURL()+"/v1.0/users/o/getMemberObjects", strings.NewReader(`{"securityEnabledOnly":false}`))
	req.Header.Set("Authorization", "Bearer "+raw)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Graph with a user token: HTTP %d, want 401", resp.StatusCode)
	}
}
