package connectctl

import (
	"encoding/json"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// body decodes a recorded request body into a generic map, so that tests
// see which fields were sent at all.
func body(t *testing.T, c call) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(c.Body, &m); err != nil {
		t.Fatalf("%s %s body %q: %v", c.Method, c.Path, c.Body, err)
	}
	return m
}

func TestTokensCreateListRevoke(t *testing.T) {
	f := newFrontDoor(t)
	c := newCLI(t)
	c.now = t0
	c.loginAdmin(f)

	out := c.ok("tokens", "create", "--name", "ci", "--role", "Reader", "--expires", "48h")
	calls := f.Calls(api.TokensPath)
	if len(calls) != 1 || calls[0].Method != "POST" {
		t.Fatalf("calls: %+v", calls)
	}
	if got, want := body(t, calls[0]), map[string]any{"name": "ci", "role": "Reader", "expiresInSeconds": float64(172800)}; !reflect.DeepEqual(got, want) {
		t.Errorf("request %v, want %v", got, want)
	}
	for _, want := range []string{
		`API token "ci" created: ID tok1, role Reader, expires 2026-11-27T12:00:00Z (in 2d).`,
		"Token (shown only now): cct_tok1_s3cret\n",
		"connectctl login --relay " + f.URL + " --ca-file " + f.CAFile + " --token-file <file holding the token>",
		"CONNECTCTL_RELAY_TOKEN=<token>",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("create output lacks %q:\n%s", want, out)
		}
	}

	// --token-file: the secret goes to the file only; no --expires: the
	// relay's default, nothing sent.
	tf := filepath.Join(t.TempDir(), "deploy.token")
	out = c.ok("tokens", "create", "--name", "deploy", "--role", "Contributor", "--token-file", tf)
	if b, err := os.ReadFile(tf); err != nil || string(b) != "cct_tok2_s3cret\n" {
		t.Errorf("token file: %q %v", b, err)
	} else if fi, _ := os.Stat(tf); fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v", fi.Mode().Perm())
	}
	if strings.Contains(out, "s3cret") || !strings.Contains(out, "--token-file "+tf) {
		t.Errorf("create --token-file output:\n%s", out)
	}
	if b := body(t, f.Calls(api.TokensPath)[1]); b["expiresInSeconds"] != nil {
		t.Errorf("no --expires sent %v", b)
	}
	c.fails("--name and --role are required", "tokens", "create", "--name", "x")
	c.fails("must not be negative", "tokens", "create", "--name", "x", "--role", "Reader", "--expires", "-1h")
	if n := len(f.Calls(api.TokensPath)); n != 2 {
		t.Errorf("%d calls, want none for the refused commands", n)
	}

	f.mu.Lock()
	f.tokens = append(f.tokens, api.APIToken{ID: "tok0", Name: "old", Role: "Owner", CreatedAt: t0.Add(-48 * time.Hour), ExpiresAt: t0.Add(-2 * time.Hour)})
	f.mu.Unlock()
	golden(t, "tokens-list", []byte(c.ok("tokens", "list")))
	var l api.TokenList
	if err := json.Unmarshal([]byte(c.ok("tokens", "list", "-o", "json")), &l); err != nil || len(l.Value) != 3 || l.Value[0].Token != "" {
		t.Errorf("tokens list -o json: %+v %v", l, err)
	}

	if out := c.ok("tokens", "revoke", "tok1"); out != "API token tok1 revoked.\n" {
		t.Errorf("revoke: %q", out)
	}
	if calls := f.Calls(api.TokenPath("tok1")); len(calls) != 1 || calls[0].Method != "DELETE" {
		t.Errorf("revoke calls: %+v", calls)
	}
	c.fails(`API token "tok1" does not exist`, "tokens", "revoke", "tok1")
}

func TestRoleAssignExpiresAndManagementRoles(t *testing.T) {
	f := newFrontDoor(t)
	c := newCLI(t)
	c.now = t0
	c.loginAdmin(f)

	out := c.ok("role", "assign", "--assignee", "oid-dana", "--role", "Writer", "--cluster", "prod", "--namespace", "web", "--expires", "8h")
	if want := "Assigned Writer to user oid-dana on cluster prod, namespace web, until 2026-11-25T20:00:00Z (in 8h) (assignment ra1).\n"; out != want {
		t.Errorf("assign output %q, want %q", out, want)
	}
	calls := f.Calls(api.RoleAssignmentsPath)
	if b := body(t, calls[0]); b["expiresAt"] != "2026-11-25T20:00:00Z" || b["cluster"] != "prod" || b["namespace"] != "web" {
		t.Errorf("assign --expires sent %v", b)
	}

	out = c.ok("role", "assign", "--assignee", "oid-ops", "--role", "Owner")
	if want := "Assigned Owner to user oid-ops on the relay (management role) (assignment ra2).\n"; out != want {
		t.Errorf("management assign output %q, want %q", out, want)
	}
	b := body(t, f.Calls(api.RoleAssignmentsPath)[1])
	if _, ok := b["cluster"]; ok || b["role"] != "Owner" || b["expiresAt"] != nil {
		t.Errorf("management assign sent %v", b)
	}

	c.fails(`--cluster is required for role "Viewer"`, "role", "assign", "--assignee", "x", "--role", "Viewer")
	c.fails("--namespace needs --cluster", "role", "assign", "--assignee", "x", "--role", "Reader", "--namespace", "web")
	c.fails("--assignee and --role are required", "role", "assign", "--role", "Reader")
	if n := len(f.Calls(api.RoleAssignmentsPath)); n != 2 {
		t.Errorf("%d calls, want none for the refused commands", n)
	}

	c.ok("role", "assign", "--assignee", "grp-sre", "--assignee-type", "Group", "--role", "Cluster Admin", "--cluster", "prod")
	f.mu.Lock()
	f.assignments = append(f.assignments, api.RoleAssignment{ID: "ra0", Role: "Viewer", PrincipalID: "oid-gone", PrincipalType: "User", Cluster: "edge", ExpiresAt: t0.Add(-time.Minute)})
	f.mu.Unlock()
	golden(t, "role-list", []byte(c.ok("role", "list")))
	var l api.AssignmentList
	if err := json.Unmarshal([]byte(c.ok("role", "list", "-o", "json")), &l); err != nil || len(l.Value) != 4 || !l.Value[0].ExpiresAt.Equal(t0.Add(8*time.Hour)) {
		t.Errorf("role list -o json: %+v %v", l, err)
	}
}

func TestAuditQuery(t *testing.T) {
	f := newFrontDoor(t)
	c := newCLI(t)
	c.now = t0
	c.loginAdmin(f)
	f.audit = []api.AuditRecord{
		{Time: t0.Add(-50 * time.Minute), Kind: api.AuditRequest, Principal: api.Principal{Kind: "user", ID: "oid-dana", Name: "dana@contoso.example"},
			Cluster: "prod", Method: "GET", Path: "/api/v1/namespaces/web/pods", Status: 200, BytesIn: 0, BytesOut: 5123, DurationMS: 12.34, Client: "10.0.0.7"},
		{Time: t0.Add(-40 * time.Minute), Kind: api.AuditRequest, Cluster: "prod", Method: "GET", Path: "/api", Status: 401, Reason: "Unauthorized", DurationMS: 0.21, Client: "10.0.0.9"},
		{Time: t0.Add(-30 * time.Minute), Kind: api.AuditSession, Event: api.AuditEnd, Principal: api.Principal{Kind: "token", ID: "tok1"}, Impersonate: "ops@contoso.example",
			Cluster: "prod", Method: "POST", Path: "/api/v1/namespaces/web/pods/app/exec", Status: 101, BytesIn: 200000, BytesOut: 4096, DurationMS: 93512.5, Client: "10.0.0.8"},
		{Time: t0.Add(-20 * time.Minute), Kind: api.AuditRequest, Principal: api.Principal{Kind: "admin", ID: "admin"},
			Method: "POST", Path: "/api/v1/tokens", Status: 201, BytesIn: 48, BytesOut: 230, DurationMS: 1.5, Client: "127.0.0.1"},
	}
	golden(t, "audit", []byte(c.ok("audit", "--cluster", "prod", "--user", "dana", "--since", "1h", "--limit", "5")))
	c.ok("audit", "--since", "2026-11-24T00:00:00+01:00")
	c.ok("audit")
	calls := f.Calls(api.AuditPath)
	for i, want := range []url.Values{
		{"cluster": {"prod"}, "user": {"dana"}, "since": {"2026-11-25T11:00:00Z"}, "limit": {"5"}},
		{"since": {"2026-11-23T23:00:00Z"}},
		{},
	} {
		if i >= len(calls) || !reflect.DeepEqual(calls[i].Query, want) {
			t.Errorf("audit call %d: %+v, want query %v", i, calls, want)
		}
	}
	var l api.AuditList
	if err := json.Unmarshal([]byte(c.ok("audit", "-o", "json")), &l); err != nil || !reflect.DeepEqual(l.Value, f.audit) {
		t.Errorf("audit -o json: %+v %v", l, err)
	}
	c.fails(`--since "yesterday"`, "audit", "--since", "yesterday")
	c.fails("want a positive duration", "audit", "--since", "-1h")
	c.fails("must not be negative", "audit", "--limit", "-1")
	if n := len(f.Calls(api.AuditPath)); n != 4 {
		t.Errorf("%d audit calls, want none for the refused commands", n)
	}
}

func TestWhoAmI(t *testing.T) {
	f := newFrontDoor(t)
	f.verify = func(tok string) (api.Principal, bool) {
		return api.Principal{Kind: api.PrincipalKindUser, ID: "oid-dana", Name: "dana@contoso.example", Groups: []string{"g1", "g2"}, Via: "bearer"}, tok == "user-token"
	}
	f.roles = []string{api.RoleContributor, api.RoleReader}
	c := newCLI(t)
	out := c.ok("login", "--relay", f.URL, "--ca-file", f.CAFile, "--token", "user-token")
	want := "Logged in to " + f.URL + " as user dana@contoso.example (object ID oid-dana, 2 groups).\nManagement roles: Contributor, Reader\nSettings saved in " + c.config + "\n"
	if out != want {
		t.Errorf("login output:\n%s\nwant:\n%s", out, want)
	}
	golden(t, "whoami", []byte(c.ok("whoami")))
	var w api.WhoAmI
	if err := json.Unmarshal([]byte(c.ok("whoami", "-o", "json")), &w); err != nil || w.Principal.ID != "oid-dana" || len(w.Roles) != 2 {
		t.Errorf("whoami -o json: %+v %v", w, err)
	}
	// A login the relay refuses is not saved, and says why.
	c2 := newCLI(t)
	if _, err := c2.run(t.Context(), nil, "login", "--relay", f.URL, "--ca-file", f.CAFile, "--token", "nope"); err == nil ||
		!strings.Contains(err.Error(), "login check failed: relay answered 401: the bearer token is not") {
		t.Errorf("refused login: %v", err)
	}
	if _, err := os.Stat(c2.config); !os.IsNotExist(err) {
		t.Errorf("a refused login was saved: %v", err)
	}
	c2.fails("--token-file, --token or --entra is required", "login", "--relay", f.URL)
	c2.fails("leave out --token", "login", "--relay", f.URL, "--entra", "--token", "x", "--issuer-url", "https://i", "--client-id", "c", "--scope", "s")
	c2.fails("login --entra: --issuer-url, --client-id and --scope are required", "login", "--relay", f.URL, "--entra")
}

func TestLoadConfigOldAndStrict(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old.yaml")
	os.WriteFile(old, []byte("relay: https://relay:8443\ncaFile: /ca.crt\ntokenFile: /admin-token\n"), 0o600)
	cfg, err := LoadConfig(old)
	if err != nil || cfg.Relay != "https://relay:8443" || cfg.TokenFile != "/admin-token" || cfg.Entra != nil {
		t.Errorf("old config: %+v %v", cfg, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("relay: https://relay:8443\nentra:\n  issuerURL: https://i\n  clientSecret: typo\n"), 0o600)
	if _, err := LoadConfig(bad); err == nil || !strings.Contains(err.Error(), "clientSecret") {
		t.Errorf("unknown field: %v", err)
	}
	e := &Config{Relay: "https://r", Entra: &EntraConfig{IssuerURL: "https://i/t/v2.0", ClientID: "cli", Scopes: []string{"api://r/.default"}, IssuerCAFile: "/ca"}}
	p := filepath.Join(dir, "e.yaml")
	if err := e.Save(p); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadConfig(p); err != nil || !reflect.DeepEqual(got, e) {
		t.Errorf("round trip: %+v %v", got, err)
	}
}
