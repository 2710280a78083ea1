package authz

import (
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
)

// arc is the data-action prefix as Azure Arc spells it; pinned here so
// that a change of api.ActionPrefix shows.
const arc = "Microsoft.Kubernetes/connectedClusters/"

func TestForResource(t *testing.T) {
	p := arc
	for _, tc := range []struct {
		ra   authzv1.ResourceAttributes
		want string
	}{
		// Core group: no group segment.
		{authzv1.ResourceAttributes{Verb: "get", Resource: "pods", Namespace: "team-a", Name: "web"}, p + "pods/read"},
		{authzv1.ResourceAttributes{Verb: "list", Resource: "pods", Namespace: "team-a", Version: "*"}, p + "pods/read"},
		{authzv1.ResourceAttributes{Verb: "watch", Resource: "configmaps", Namespace: "team-a"}, p + "configmaps/read"},
		{authzv1.ResourceAttributes{Verb: "create", Resource: "secrets", Namespace: "team-a"}, p + "secrets/write"},
		{authzv1.ResourceAttributes{Verb: "update", Resource: "services", Namespace: "team-a"}, p + "services/write"},
		{authzv1.ResourceAttributes{Verb: "patch", Resource: "services", Namespace: "team-a"}, p + "services/write"},
		{authzv1.ResourceAttributes{Verb: "delete", Resource: "pods", Namespace: "team-a"}, p + "pods/delete"},
		{authzv1.ResourceAttributes{Verb: "deletecollection", Resource: "pods", Namespace: "team-a"}, p + "pods/delete"},
		{authzv1.ResourceAttributes{Verb: "list", Resource: "namespaces"}, p + "namespaces/read"},
		{authzv1.ResourceAttributes{Verb: "get", Resource: "nodes", Name: "n1"}, p + "nodes/read"},
		// Subresources.
		{authzv1.ResourceAttributes{Verb: "get", Resource: "pods", Subresource: "log", Namespace: "team-a"}, p + "pods/log/read"},
		{authzv1.ResourceAttributes{Verb: "update", Resource: "pods", Subresource: "status", Namespace: "team-a"}, p + "pods/status/write"},
		{authzv1.ResourceAttributes{Verb: "create", Resource: "serviceaccounts", Subresource: "token", Namespace: "team-a"}, p + "serviceaccounts/token/write"},
		{authzv1.ResourceAttributes{Verb: "get", Resource: "services", Subresource: "proxy", Namespace: "team-a"}, p + "services/proxy/read"},
		{authzv1.ResourceAttributes{Verb: "update", Group: "apps", Resource: "deployments", Subresource: "scale", Namespace: "team-a"}, p + "apps/deployments/scale/write"},
		// Streaming subresources are actions whatever the verb.
		{authzv1.ResourceAttributes{Verb: "create", Resource: "pods", Subresource: "exec", Namespace: "team-a"}, p + "pods/exec/action"},
		{authzv1.ResourceAttributes{Verb: "get", Resource: "pods", Subresource: "exec", Namespace: "team-a"}, p + "pods/exec/action"},
		{authzv1.ResourceAttributes{Verb: "create", Resource: "pods", Subresource: "attach", Namespace: "team-a"}, p + "pods/attach/action"},
		{authzv1.ResourceAttributes{Verb: "get", Resource: "pods", Subresource: "portforward", Namespace: "team-a"}, p + "pods/portforward/action"},
		// Named groups.
		{authzv1.ResourceAttributes{Verb: "create", Group: "apps", Resource: "deployments", Namespace: "team-a"}, p + "apps/deployments/write"},
		{authzv1.ResourceAttributes{Verb: "list", Group: "batch", Resource: "jobs"}, p + "batch/jobs/read"},
		{authzv1.ResourceAttributes{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "rolebindings", Namespace: "team-a"}, p + "rbac.authorization.k8s.io/rolebindings/write"},
		{authzv1.ResourceAttributes{Verb: "get", Group: "networking.k8s.io", Resource: "ingresses", Namespace: "team-a"}, p + "networking.k8s.io/ingresses/read"},
		// Special verbs.
		{authzv1.ResourceAttributes{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "admin"}, p + "rbac.authorization.k8s.io/clusterroles/bind/action"},
		{authzv1.ResourceAttributes{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "roles", Namespace: "team-a"}, p + "rbac.authorization.k8s.io/roles/escalate/action"},
		{authzv1.ResourceAttributes{Verb: "use", Group: "policy", Resource: "podsecuritypolicies"}, p + "policy/podsecuritypolicies/use/action"},
		{authzv1.ResourceAttributes{Verb: "impersonate", Resource: "users", Name: "bob"}, p + "users/impersonate/action"},
		{authzv1.ResourceAttributes{Verb: "impersonate", Resource: "serviceaccounts", Namespace: "team-a"}, p + "serviceaccounts/impersonate/action"},
		{authzv1.ResourceAttributes{Verb: "approve", Group: "certificates.k8s.io", Resource: "signers", Name: "x"}, p + "certificates.k8s.io/signers/approve/action"},
		{authzv1.ResourceAttributes{Verb: "*", Resource: "pods", Namespace: "team-a"}, p + "pods/*"},
		{authzv1.ResourceAttributes{Verb: "*", Group: "*", Resource: "*"}, p + "*/*/*"},
		// Custom resources are named groups.
		{authzv1.ResourceAttributes{Verb: "list", Group: "stable.example.com", Resource: "crontabs", Namespace: "team-a"}, p + "stable.example.com/crontabs/read"},
		{authzv1.ResourceAttributes{Verb: "delete", Group: "stable.example.com", Resource: "crontabs", Namespace: "team-a"}, p + "stable.example.com/crontabs/delete"},
		{authzv1.ResourceAttributes{Verb: "patch", Group: "stable.example.com", Resource: "crontabs", Subresource: "status", Namespace: "team-a"}, p + "stable.example.com/crontabs/status/write"},
		{authzv1.ResourceAttributes{Verb: "get", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}, p + "apiextensions.k8s.io/customresourcedefinitions/read"},
	} {
		got, err := ForResource(&tc.ra)
		if err != nil {
			t.Errorf("%+v: %v", tc.ra, err)
			continue
		}
		if got.Name != tc.want || got.Namespace != tc.ra.Namespace {
			t.Errorf("%+v:\n got %+v\nwant %s in %q", tc.ra, got, tc.want, tc.ra.Namespace)
		}
		spec := &authzv1.SubjectAccessReviewSpec{ResourceAttributes: &tc.ra, NonResourceAttributes: &authzv1.NonResourceAttributes{Path: "/x", Verb: "get"}}
		if a, _ := For(spec); a != got {
			t.Errorf("For prefers resource attributes: got %+v", a)
		}
	}
}

func TestForNonResource(t *testing.T) {
	p := arc
	for _, tc := range []struct {
		path, verb, want string
	}{
		{"/healthz", "get", p + "healthz/read"},
		{"/version", "get", p + "version/read"},
		{"/version/", "get", p + "version/read"},
		{"/openapi/v3", "get", p + "openapi/v3/read"},
		{"/apis/apps/v1", "head", p + "apis/apps/v1/read"},
		{"/logs/kube-apiserver.log", "get", p + "logs/kube-apiserver.log/read"},
		{"/metrics", "get", p + "metrics/read"},
		{"/debug/flags/v", "put", p + "debug/flags/v/write"},
		{"/x", "post", p + "x/write"},
		{"/x", "patch", p + "x/write"},
		{"/x", "delete", p + "x/delete"},
		{"/x", "options", p + "x/options/action"},
		{"/", "get", p + "read"},
	} {
		got, err := ForNonResource(&authzv1.NonResourceAttributes{Path: tc.path, Verb: tc.verb})
		if err != nil {
			t.Errorf("%s %s: %v", tc.verb, tc.path, err)
			continue
		}
		if got.Name != tc.want || got.Namespace != "" {
			t.Errorf("%s %s: got %+v, want %s at cluster scope", tc.verb, tc.path, got, tc.want)
		}
	}
}

func TestForRefusesIncomplete(t *testing.T) {
	for _, spec := range []*authzv1.SubjectAccessReviewSpec{
		{},
		{ResourceAttributes: &authzv1.ResourceAttributes{Verb: "get"}},
		{ResourceAttributes: &authzv1.ResourceAttributes{Resource: "pods"}},
		{NonResourceAttributes: &authzv1.NonResourceAttributes{Path: "healthz", Verb: "get"}},
		{NonResourceAttributes: &authzv1.NonResourceAttributes{Path: "/healthz"}},
		{NonResourceAttributes: &authzv1.NonResourceAttributes{Path: "/" + strings.Repeat("a", 600), Verb: "get"}},
		{ResourceAttributes: &authzv1.ResourceAttributes{Verb: "get", Resource: "pods with space"}},
	} {
		if a, err := For(spec); err == nil {
			t.Errorf("%+v: got %+v, want an error", spec, a)
		}
	}
}

func TestPathMatcher(t *testing.T) {
	m, err := NewPathMatcher([]string{"/api", "/api/*", "/version", "/openapi/*"})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/api": true, "/api/v1": true, "/version": true, "/openapi/v2": true, "/openapi/v3/apis/apps/v1": true,
		"/apis": false, "/versions": false, "/openapi": false, "/healthz": false, "/": false,
	} {
		if got := m.Match(path); got != want {
			t.Errorf("Match(%q) = %v, want %v", path, got, want)
		}
	}
	all, _ := NewPathMatcher([]string{"*"})
	if !all.Match("/anything") {
		t.Error("* matches every path")
	}
	none, _ := NewPathMatcher(nil)
	if none.Match("/api") || (*PathMatcher)(nil).Match("/api") {
		t.Error("no patterns match nothing")
	}
	for _, bad := range []string{"api", "/a*/b", "/a**", "/*/x"} {
		if _, err := NewPathMatcher([]string{bad}); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}
