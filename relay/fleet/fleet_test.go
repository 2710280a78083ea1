package fleet

import (
	"encoding/base64"
	"testing"
)

func TestPrincipalOf(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	if p, err := PrincipalOf(enc(`{"kind":"user","id":"oid-1","name":"dev","groups":["g1"],"via":"bearer"}`)); err != nil || p.ID != "oid-1" || len(p.Groups) != 1 {
		t.Fatalf("a user principal: %+v, %v", p, err)
	}
	for name, h := range map[string]string{
		"empty":            "",
		"not base64":       "%%%",
		"not JSON":         enc("nope"),
		"a peer":           enc(`{"kind":"peer","id":"relay-1"}`),
		"no id":            enc(`{"kind":"user"}`),
		"an unknown field": enc(`{"kind":"user","id":"x","admin":true}`),
	} {
		if _, err := PrincipalOf(h); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
