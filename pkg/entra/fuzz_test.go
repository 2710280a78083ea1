package entra

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
)

// FuzzPeek feeds arbitrary bearer tokens to the unverified parser the
// verifier runs on every request: it must not panic, must bound its work,
// and what it returns must be consistent.
func FuzzPeek(f *testing.F) {
	b64 := base64.RawURLEncoding.EncodeToString
	for _, s := range []string{
		"", ".", "..", "a.b.c", "a.b.c.d.e",
		b64([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + b64([]byte(`{"iss":"https://login.microsoftonline.com/t/v2.0","aud":["a","b"],"exp":1e10,"groups":["g"]}`)) + ".sig",
		b64([]byte(`{"alg":"none"}`)) + "." + b64([]byte(`{"aud":"x","exp":"soon","nbf":-1}`)) + ".",
		b64([]byte(`{"alg":"RS256"}`)) + "." + b64([]byte(`{"_claim_names":{"groups":"src1"},"_claim_sources":{"src1":{"endpoint":"https://graph"}}}`)) + ".x",
		b64([]byte(`{"alg":"RS256"}`)) + "." + b64([]byte(`null`)) + ".x",
		b64([]byte(`{"alg":"RS256"}`)) + "." + b64([]byte(`{"exp":1.5e300}`)) + ".x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		h, c, err := Peek(raw)
		if len(raw) > maxTokenSize && (c != nil || err == nil) {
			t.Fatal("oversized token parsed")
		}
		if strings.Count(raw, ".") != 2 && c != nil {
			t.Fatal("claims from a token that is not three segments")
		}
		if err == nil && (h == nil || c == nil) {
			t.Fatal("nil header or claims without an error")
		}
		if c != nil {
			c.HasGroupsOverage()
			c.String("upn")
			if !c.Expiry.IsZero() && c.Expiry.Unix() < 0 {
				t.Fatalf("negative expiry %v", c.Expiry)
			}
		}
	})
}

// FuzzClaims runs arbitrary payloads through claims parsing and identity
// mapping (what a verified token turns into): no panics, and an identity
// never comes out with an empty user name, a system: name or group, or
// extras that do not match the claims.
func FuzzClaims(f *testing.F) {
	for _, s := range []string{
		`{"tid":"t","oid":"o","upn":"alice@example.com","groups":["g1","g2"]}`,
		`{"tid":"t","oid":"o","preferred_username":"system:admin"}`,
		`{"tid":"t","oid":"o","groups":["system:masters"]}`,
		`{"tid":"t","oid":"o","_claim_names":{"groups":"s"},"_claim_sources":{"s":{"endpoint":"x"}}}`,
		`{"tid":"t","oid":"o","upn":1}`,
		`{"tid":"x","oid":"o"}`,
		`[]`, `{}`, `{"groups":[null]}`,
	} {
		f.Add([]byte(s))
	}
	v, err := NewVerifier(&Config{IssuerURL: "https://issuer.test", Tenants: []string{"t"}, Audiences: []string{"a"}, Groups: fuzzGroups{}})
	if err != nil {
		f.Fatal(err)
	}
	is := v.issuers["https://issuer.test/t/v2.0"]
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := ParseClaims(payload)
		if err != nil || c == nil {
			return
		}
		id, err := v.identity(context.Background(), is, c)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("identity error without a reason: %v", err)
			}
			return
		}
		if id.Username == "" || strings.HasPrefix(id.Username, "system:") {
			t.Fatalf("bad user name %q", id.Username)
		}
		for _, g := range id.Groups {
			if g == "" || strings.HasPrefix(g, "system:") {
				t.Fatalf("bad group %q", g)
			}
		}
		if id.TenantID != "t" || id.ObjectID != c.ObjectID || id.ObjectID == "" {
			t.Fatalf("identity %+v does not match claims %+v", id, c)
		}
	})
}

type fuzzGroups struct{}

func (fuzzGroups) MemberGroups(context.Context, string, string) ([]string, error) {
	return []string{"resolved-1", "system:nope"}, nil
}
