package access

import "github.com/clusterconnect/clusterconnect/pkg/api"

import "testing"

func TestMatchAction(t *testing.T) {
	for _, tc := range []struct {
		pattern, action string
		want            bool
	}{
		{prefix + "*", prefix + "pods/read", true},
		{prefix + "apps/*/read", prefix + "apps/deployments/read", true},
		{prefix + "apps/*/read", prefix + "apps/deployments/write", false},
		{prefix + "secrets/*", prefix + "secrets/read", true},
		{prefix + "secrets/*", prefix + "secretsx/read", false},
		{prefix + "pods/read", prefix + "pods/log/read", false},
		{prefix + "pods/*", prefix + "pods/exec/action", true},
		{"*", "anything", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
	} {
		if got := MatchAction(tc.pattern, tc.action); got != tc.want {
			t.Errorf("MatchAction(%q, %q) = %v", tc.pattern, tc.action, got)
		}
	}
}

func TestBuiltInRoles(t *testing.T) {
	a := func(s string) string { return api.ActionPrefix + s }
	for _, tc := range []struct {
		role, action string
		want         bool
	}{
		{"Viewer", a("pods/read"), true},
		{"Viewer", a("apps/deployments/read"), true},
		{"Viewer", a("secrets/read"), false},
		{"Viewer", a("apps/deployments/write"), false},
		{"Viewer", a("rbac.authorization.k8s.io/rolebindings/read"), false},
		{"Writer", a("apps/deployments/write"), true},
		{"Writer", a("secrets/read"), true},
		{"Writer", a("pods/exec/action"), true},
		{"Writer", a("rbac.authorization.k8s.io/rolebindings/write"), false},
		{"Admin", a("rbac.authorization.k8s.io/rolebindings/write"), true},
		{"Admin", a("rbac.authorization.k8s.io/clusterroles/write"), false},
		{"Cluster Admin", a("rbac.authorization.k8s.io/clusterroles/write"), true},
		{"Cluster Admin", a("nodes/delete"), true},
	} {
		if got := Allows(BuiltIn[tc.role], tc.action); got != tc.want {
			t.Errorf("%s allows %s = %v, want %v", tc.role, tc.action, got, tc.want)
		}
	}
	custom := api.Role{DataActions: []string{a("*")}, NotDataActions: []string{a("secrets/*")}}
	if !Allows(custom, a("pods/delete")) || Allows(custom, a("secrets/read")) {
		t.Error("notDataActions not subtracted")
	}
}
