package entra

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// verifiedPayload is a key set that accepts every signature and answers
// with a fixed payload: what a key set returns is all that the signature
// covers, whatever else the token's text says.
type verifiedPayload []byte

func (p verifiedPayload) VerifySignature(context.Context, string) ([]byte, error) { return p, nil }

// The identity is made of the claims the key set verified, never of the
// token's own unverified parse: a token whose text says admin but whose
// verified payload says alice is alice.
func TestIdentityComesFromTheVerifiedPayload(t *testing.T) {
	const tid = "11111111-2222-3333-4444-555555555555"
	v, err := NewVerifier(&Config{IssuerURL: "https://issuer.example", V1IssuerURL: "https://sts.example", Tenants: []string{tid}, Audiences: []string{"api://cc"}})
	if err != nil {
		t.Fatal(err)
	}
	is := v.issuers["https://issuer.example/"+tid+"/v2.0"]
	claims := func(user string, groups ...string) []byte {
		b, _ := json.Marshal(map[string]any{"iss": is.url, "aud": "api://cc", "tid": tid, "oid": "oid-" + user,
			"preferred_username": user, "groups": groups, "exp": time.Now().Add(time.Hour).Unix()})
		return b
	}
	is.verifier = oidc.NewVerifier(is.url, verifiedPayload(claims("alice@example.com", "g-1")),
		&oidc.Config{SkipClientIDCheck: true, SupportedSigningAlgs: v.algs})
	b64 := base64.RawURLEncoding.EncodeToString
	raw := b64([]byte(`{"alg":"RS256","kid":"k1","typ":"JWT"}`)) + "." + b64(claims("admin@example.com", "g-admins")) + "." + b64([]byte("signature"))

	id, err := v.Verify(t.Context(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if id.Username != "alice@example.com" || id.ObjectID != "oid-alice@example.com" || !slices.Equal(id.Groups, []string{"g-1"}) {
		t.Errorf("identity %+v: want alice's, from the verified payload", id)
	}
}
