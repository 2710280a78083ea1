package relay

import "testing"

func TestMatchAction(t *testing.T) {
	for _, tc := range []struct {
		pattern, action string
		want            bool
	}{
		{ActionPrefix + "*", ActionPrefix + "pods/read", true},
		{ActionPrefix + "apps/*/read", ActionPrefix + "apps/deployments/read", true},
		{ActionPrefix + "apps/*/read", ActionPrefix + "apps/deployments/write", false},
		{ActionPrefix + "secrets/*", ActionPrefix + "secrets/read", true},
		{ActionPrefix + "secrets/*", ActionPrefix + "secretsx/read", false},
		{ActionPrefix + "pods/read", ActionPrefix + "pods/log/read", false},
		{ActionPrefix + "pods/*", ActionPrefix + "pods/exec/action", true},
		{"*", "anything", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
	} {
		if got := matchAction(tc.pattern, tc.action); got != tc.want {
			t.Errorf("matchAction(%q, %q) = %v", tc.pattern, tc.action, got)
		}
	}
}

func TestBuiltInRoles(t *testing.T) {
	a := func(s string) string { return ActionPrefix + s }
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
		if got := BuiltInRoles[tc.role].Allows(tc.action); got != tc.want {
			t.Errorf("%s allows %s = %v, want %v", tc.role, tc.action, got, tc.want)
		}
	}
	custom := Role{DataActions: []string{a("*")}, NotDataActions: []string{a("secrets/*")}}
	if !custom.Allows(a("pods/delete")) || custom.Allows(a("secrets/read")) {
		t.Error("notDataActions not subtracted")
	}
}
