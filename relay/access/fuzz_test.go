package access_test

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/relay/access"
)

// refMatch is MatchAction as its documentation states it: the pattern as an
// anchored, case-insensitive regular expression in which each * is .* (any
// run of characters, "/" and newlines included) and everything else is
// literal. Regular expressions need valid UTF-8.
func refMatch(t *testing.T, pattern, action string) bool {
	t.Helper()
	parts := strings.Split(pattern, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	re, err := regexp.Compile(`(?is)\A` + strings.Join(parts, ".*") + `\z`)
	if err != nil {
		t.Fatalf("reference regexp for %q: %v", pattern, err)
	}
	return re.MatchString(action)
}

func ascii(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r >= utf8.RuneSelf })
}

// asciiEqualFold is strings.EqualFold for ASCII letters only.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// FuzzMatchAction checks MatchAction against the Azure semantics it
// documents: * matches any run of characters, "/" included, and case does
// not matter for ASCII letters; every other byte must be equal.
func FuzzMatchAction(f *testing.F) {
	for _, s := range [][2]string{
		{api.ActionPrefix + "*", api.ActionPrefix + "pods/read"},
		{api.ActionPrefix + "apps/*/read", api.ActionPrefix + "apps/deployments/scale/read"},
		{api.ActionPrefix + "apps/*/read", api.ActionPrefix + "apps/deployments/write"},
		{api.ActionPrefix + "serviceaccounts/*", api.ActionPrefix + "ServiceAccounts/token/write"},
		{api.ActionPrefix + "*/impersonate/action", api.ActionPrefix + "users/impersonate/action"},
		{"a*b*c", "aXXbYYc"},
		{"a*b*c", "aXXbYY"},
		{"*a*", "bbb"},
		{"**", ""},
		{"", ""},
		{"", "x"},
		{"x", ""},
		{"a*", "A\nb"},
		{"*ab", "aab"},
		{"a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaa"},
		{"POD*", "pods"},
		{"[a-z]*", "x"},
		{".*", "xx"},
		{"ր", "ή"},
		{"k", "\u212a"},
		{api.ActionPrefix + "sécrets/*", api.ActionPrefix + "säcrets/read"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, action string) {
		got := access.MatchAction(pattern, action)

		if !strings.Contains(pattern, "*") {
			if want := asciiEqualFold(pattern, action); got != want {
				t.Errorf("MatchAction(%q, %q) = %v; without a * it must be ASCII case-insensitive equality = %v", pattern, action, got, want)
			}
		}
		if !access.MatchAction("*", action) {
			t.Errorf("MatchAction(\"*\", %q) = false", action)
		}
		if !access.MatchAction(pattern+"*", pattern+action) {
			t.Errorf("MatchAction(%q, %q) = false; p+\"*\" must match p+anything", pattern+"*", pattern+action)
		}
		if !access.MatchAction(pattern, pattern) {
			t.Errorf("MatchAction(%q, itself) = false", pattern)
		}
		if ascii(pattern) && ascii(action) {
			if want := refMatch(t, pattern, action); got != want {
				t.Errorf("MatchAction(%q, %q) = %v, the reference (regexp) says %v", pattern, action, got, want)
			}
		}
	})
}

// FuzzBuiltInRolesMintNoCredentials checks that no built-in cluster role but
// Cluster Admin allows minting a service-account token or impersonating,
// whatever comes after serviceaccounts/token/ or before /impersonate/action,
// in any case; and that Cluster Admin does.
func FuzzBuiltInRolesMintNoCredentials(f *testing.F) {
	for _, s := range []string{"", "write", "create", "x/y/z", "users", "serviceaccounts", "authentication.k8s.io/userextras/scopes", "*", "/", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var denied []string
		for _, a := range []string{
			api.ActionPrefix + "serviceaccounts/token/" + s,
			api.ActionPrefix + s + "/impersonate/action",
			s + "/impersonate/action",
		} {
			denied = append(denied, a, strings.ToUpper(a), strings.ToLower(a))
		}
		for _, name := range access.BuiltInNames {
			role := access.BuiltIn[name]
			for _, a := range denied {
				allowed := access.Allows(role, a)
				if name == api.RoleClusterAdmin {
					if !allowed && strings.HasPrefix(strings.ToLower(a), strings.ToLower(api.ActionPrefix)) {
						t.Errorf("%s does not allow %q", name, a)
					}
					continue
				}
				if allowed {
					t.Errorf("%s allows %q", name, a)
				}
			}
		}
	})
}
