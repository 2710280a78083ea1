package guard

import (
	"context"
	"strings"
	"testing"

	"github.com/clusterconnect/clusterconnect/guard/authz"
	"github.com/clusterconnect/clusterconnect/pkg/api"
)

// recordingChecker allows everything and checks what it is asked.
type recordingChecker struct{ t *testing.T }

func (c recordingChecker) Check(_ context.Context, req *api.CheckAccessRequest) (*api.CheckAccessResponse, error) {
	if req.Subject.OID == "" || len(req.Actions) != 1 || !strings.HasPrefix(req.Actions[0], api.ActionPrefix) {
		c.t.Fatalf("bad checkAccess request %+v", req)
	}
	for _, g := range req.Subject.Groups {
		if g == "" || strings.HasPrefix(g, "system:") {
			c.t.Fatalf("group %q sent to the relay", g)
		}
	}
	return &api.CheckAccessResponse{Decisions: []api.Decision{{Action: req.Actions[0], Allowed: true, Reason: "ok"}}}, nil
}

// FuzzSubjectAccessReview decodes arbitrary review bodies and authorizes
// what decodes: no panics, never both allowed and denied, system: users
// and users without an oid never allowed or denied, and only well-formed
// checkAccess requests.
func FuzzSubjectAccessReview(f *testing.F) {
	for _, s := range []string{
		`{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"resourceAttributes":{"namespace":"team-a","verb":"get","version":"*","resource":"pods","subresource":"log"},"user":"alice","groups":["g1","system:authenticated"],"extra":{"oid":["o1"],"tid":["t"]},"uid":"o1"}}`,
		`{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"nonResourceAttributes":{"path":"/healthz","verb":"get"},"user":"alice","extra":{"oid":["o1"]}}}`,
		`{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"resourceAttributes":{"verb":"create","group":"apps","resource":"deployments","fieldSelector":{"requirements":[{"key":"a","operator":"In","values":["b"]}]}},"user":"system:serviceaccount:a:b","extra":{"oid":["o"]}}}`,
		`{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"nonResourceAttributes":{"path":"/x y","verb":"get"},"user":"u","extra":{"oid":["o"]}}}`,
		`{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"user":"u","extra":{"oid":[]}}}`,
		`{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":null}`,
		`{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":"x"}}`,
		`[]`, `null`, `{"apiVersion":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if tr, err := DecodeTokenReview(body); err == nil && tr == nil {
			t.Fatal("nil token review without an error")
		}
		r, err := DecodeSubjectAccessReview(body)
		if err != nil {
			if r != nil {
				t.Fatal("review with an error")
			}
			return
		}
		a, err := NewAuthorizer(AuthorizerConfig{Checker: recordingChecker{t}, AllowedPaths: mustPaths(DefaultAllowedPaths)})
		if err != nil {
			t.Fatal(err)
		}
		st := a.Authorize(context.Background(), &r.Spec)
		if st.Allowed && st.Denied {
			t.Fatalf("allowed and denied: %+v", st)
		}
		oids := r.Spec.Extra["oid"]
		if (strings.HasPrefix(r.Spec.User, "system:") || len(oids) != 1 || oids[0] == "") && (st.Allowed || st.Denied) {
			t.Fatalf("an opinion on %q with oid %q: %+v", r.Spec.User, oids, st)
		}
		if st.Reason == "" {
			t.Fatalf("no reason: %+v", st)
		}
		if act, err := authz.For(&r.Spec); err == nil && !strings.HasPrefix(act.Name, api.ActionPrefix) {
			t.Fatalf("action %q", act.Name)
		}
	})
}

func mustPaths(p []string) *authz.PathMatcher {
	m, err := authz.NewPathMatcher(p)
	if err != nil {
		panic(err)
	}
	return m
}
