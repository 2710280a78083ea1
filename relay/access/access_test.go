package access

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"

	"github.com/clusterconnect/clusterconnect/guard/authz"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

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
		// Azure's * matches across "/": the reason Writer needs notDataActions.
		{prefix + "serviceaccounts/*", prefix + "serviceaccounts/token/write", true},
		{prefix + "*/impersonate/action", prefix + "users/impersonate/action", true},
		{prefix + "*/impersonate/action", prefix + "authentication.k8s.io/userextras/scopes/impersonate/action", true},
		{prefix + "*/impersonate/action", prefix + "pods/exec/action", false},
		{"*", "anything", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
	} {
		if got := MatchAction(tc.pattern, tc.action); got != tc.want {
			t.Errorf("MatchAction(%q, %q) = %v", tc.pattern, tc.action, got)
		}
	}
}

// req is a Kubernetes request as guard sees it.
type req struct {
	verb, group, resource, sub string
}

// action is the data action guard asks the relay for r.
func (r req) action(t *testing.T) string {
	t.Helper()
	a, err := authz.ForResource(&authzv1.ResourceAttributes{Verb: r.verb, Group: r.group, Resource: r.resource, Subresource: r.sub, Namespace: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	return a.Name
}

// connect stands for api.ConnectAction in the table below.
var connect = req{verb: "connect"}

// TestBuiltInRoles pins what each built-in cluster role allows, in the
// action strings guard produces for the Kubernetes request.
func TestBuiltInRoles(t *testing.T) {
	const (
		viewer  = api.RoleViewer
		writer  = api.RoleWriter
		admin   = api.RoleAdmin
		user    = api.RoleClusterUser
		cluster = api.RoleClusterAdmin
		rbac    = "rbac.authorization.k8s.io"
	)
	for _, tc := range []struct {
		role string
		req  req
		want bool
	}{
		// Cluster User: connect, nothing else.
		{user, connect, true},
		{user, req{"get", "", "pods", ""}, false},
		{user, req{"list", "", "namespaces", ""}, false},

		// Viewer: reads, not secrets or RBAC; connects.
		{viewer, connect, true},
		{viewer, req{"get", "", "pods", ""}, true},
		{viewer, req{"list", "", "pods", ""}, true},
		{viewer, req{"get", "", "pods", "log"}, true},
		{viewer, req{"watch", "apps", "deployments", ""}, true},
		{viewer, req{"list", "batch", "cronjobs", ""}, true},
		{viewer, req{"list", "", "namespaces", ""}, true},
		{viewer, req{"get", "", "serviceaccounts", ""}, true},
		{viewer, req{"get", "", "secrets", ""}, false},
		{viewer, req{"list", "", "secrets", ""}, false},
		{viewer, req{"create", "apps", "deployments", ""}, false},
		{viewer, req{"delete", "", "pods", ""}, false},
		{viewer, req{"create", "", "pods", "exec"}, false},
		{viewer, req{"get", rbac, "rolebindings", ""}, false},
		{viewer, req{"get", rbac, "roles", ""}, false},
		{viewer, req{"get", "", "nodes", ""}, false},
		{viewer, req{"create", "", "serviceaccounts", "token"}, false},

		// Writer: workloads and secrets; no RBAC, no credentials.
		{writer, connect, true},
		{writer, req{"create", "apps", "deployments", ""}, true},
		{writer, req{"patch", "apps", "deployments", "scale"}, true},
		{writer, req{"delete", "apps", "deployments", ""}, true},
		{writer, req{"create", "", "secrets", ""}, true},
		{writer, req{"get", "", "secrets", ""}, true},
		{writer, req{"create", "", "configmaps", ""}, true},
		{writer, req{"create", "", "pods", "exec"}, true},
		{writer, req{"get", "", "pods", "portforward"}, true},
		{writer, req{"create", "", "serviceaccounts", ""}, true},
		{writer, req{"delete", "", "serviceaccounts", ""}, true},
		{writer, req{"create", "", "serviceaccounts", "token"}, false},
		{writer, req{"impersonate", "", "serviceaccounts", ""}, false},
		{writer, req{"impersonate", "", "users", ""}, false},
		{writer, req{"impersonate", "", "groups", ""}, false},
		{writer, req{"create", rbac, "roles", ""}, false},
		{writer, req{"create", rbac, "rolebindings", ""}, false},
		{writer, req{"create", rbac, "clusterrolebindings", ""}, false},
		{writer, req{"update", "", "namespaces", ""}, false},
		{writer, req{"update", "", "resourcequotas", ""}, false},
		{writer, req{"get", "", "nodes", ""}, false},

		// Admin: Writer plus namespace RBAC; still no credentials.
		{admin, connect, true},
		{admin, req{"create", rbac, "rolebindings", ""}, true},
		{admin, req{"create", rbac, "roles", ""}, true},
		{admin, req{"bind", rbac, "roles", ""}, true},     // kubectl create rolebinding --role
		{admin, req{"escalate", rbac, "roles", ""}, true}, // kubectl create role
		{admin, req{"create", "authorization.k8s.io", "localsubjectaccessreviews", ""}, true},
		{admin, req{"create", "apps", "deployments", ""}, true},
		{admin, req{"get", "", "secrets", ""}, true},
		{admin, req{"create", rbac, "clusterroles", ""}, false},
		{admin, req{"create", rbac, "clusterrolebindings", ""}, false},
		{admin, req{"bind", rbac, "clusterroles", ""}, false},
		{admin, req{"update", "", "namespaces", ""}, false},
		{admin, req{"delete", "", "namespaces", ""}, false},
		{admin, req{"update", "", "resourcequotas", ""}, false},
		{admin, req{"create", "", "serviceaccounts", "token"}, false},
		{admin, req{"impersonate", "", "serviceaccounts", ""}, false},
		{admin, req{"impersonate", "", "users", ""}, false},
		{admin, req{"get", "", "nodes", ""}, false},

		// Cluster Admin: everything.
		{cluster, connect, true},
		{cluster, req{"create", rbac, "clusterroles", ""}, true},
		{cluster, req{"delete", "", "nodes", ""}, true},
		{cluster, req{"create", "", "serviceaccounts", "token"}, true},
		{cluster, req{"impersonate", "", "users", ""}, true},
		{cluster, req{"*", "*", "*", ""}, true},
	} {
		action := api.ConnectAction
		if tc.req != connect {
			action = tc.req.action(t)
		}
		if got := Allows(BuiltIn[tc.role], action); got != tc.want {
			t.Errorf("%s allows %s = %v, want %v", tc.role, action, got, tc.want)
		}
	}
	custom := api.Role{DataActions: []string{prefix + "*"}, NotDataActions: []string{prefix + "secrets/*"}}
	if !Allows(custom, prefix+"pods/delete") || Allows(custom, prefix+"secrets/read") {
		t.Error("notDataActions not subtracted")
	}
}

// Each built-in cluster role allows everything the one below it does:
// Cluster User ⊂ Viewer ⊂ Writer ⊂ Admin ⊂ Cluster Admin.
func TestBuiltInRolesNest(t *testing.T) {
	var sample []string
	for _, n := range BuiltInNames {
		for _, a := range BuiltIn[n].DataActions {
			for _, v := range []string{"read", "write", "delete", "token/write", "impersonate/action", "exec/action"} {
				sample = append(sample, strings.ReplaceAll(a, "*", v))
			}
		}
	}
	for i := 1; i < len(BuiltInNames); i++ {
		lo, hi := BuiltIn[BuiltInNames[i-1]], BuiltIn[BuiltInNames[i]]
		for _, a := range sample {
			if Allows(lo, a) && !Allows(hi, a) {
				t.Errorf("%s allows %s, %s does not", lo.Name, a, hi.Name)
			}
		}
	}
	for _, n := range BuiltInNames {
		if r := BuiltIn[n]; r.Name != n || !r.BuiltIn || r.Description == "" || !Allows(r, api.ConnectAction) {
			t.Errorf("built-in %q: %+v", n, r)
		}
		if err := ValidActions(BuiltIn[n].DataActions); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}

var t0 = time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)

type fixture struct {
	t   *testing.T
	st  *store.Bolt
	ctx context.Context
}

func newFixture(t *testing.T, clusters ...string) *fixture {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t, st, context.Background()}
	for _, c := range clusters {
		if err := st.CreateCluster(f.ctx, &store.Cluster{Name: c}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// assign stores an assignment; typ is "User" or "Group"; expires zero means never.
func (f *fixture) assign(id, role, typ, principal, cluster, ns string, expires time.Time) {
	f.t.Helper()
	if err := f.st.CreateAssignment(f.ctx, &store.RoleAssignment{ID: id, Role: role, PrincipalType: typ, PrincipalID: principal,
		Cluster: cluster, Namespace: ns, CreatedAt: t0.Add(-time.Hour), ExpiresAt: expires}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) token(id, role string, expires time.Time) {
	f.t.Helper()
	if err := f.st.CreateToken(f.ctx, &store.APIToken{ID: id, Name: id, Role: role, ExpiresAt: expires}); err != nil {
		f.t.Fatal(err)
	}
}

func TestDecide(t *testing.T) {
	f := newFixture(t, "c", "other")
	soon, later := t0.Add(time.Hour), t0.Add(2*time.Hour)
	f.assign("a1", api.RoleViewer, "User", "u1", "c", "", soon)
	f.assign("a2", api.RoleWriter, "User", "u1", "c", "", later)
	f.assign("a3", api.RoleClusterAdmin, "User", "u1", "c", "", t0) // expired at t0
	f.assign("a4", api.RoleAdmin, "Group", "g1", "c", "team-a", time.Time{})
	f.assign("a5", api.RoleClusterAdmin, "User", "u1", "other", "", time.Time{})
	f.assign("a6", api.RoleOwner, "User", "u1", "c", "", time.Time{})         // a management role on a cluster grants nothing
	f.assign("a7", "gone", "User", "u1", "c", "", time.Time{})                // a role that no longer exists
	f.assign("a8", api.RoleClusterAdmin, "Robot", "u1", "c", "", time.Time{}) // no such principal type
	if err := f.st.PutRole(f.ctx, &store.RoleDefinition{Name: "node-reader", DataActions: []string{prefix + "nodes/read"}}); err != nil {
		t.Fatal(err)
	}
	f.assign("a9", "node-reader", "User", "u1", "c", "", soon)

	decide := func(oid string, groups []string, ns string, actions ...string) api.CheckAccessResponse {
		t.Helper()
		r, err := Decide(f.ctx, f.st, "c", &api.CheckAccessRequest{Subject: api.Subject{OID: oid, Groups: groups}, Namespace: ns, Actions: actions}, t0, nil)
		if err != nil || len(r.Decisions) != len(actions) {
			t.Fatalf("Decide: %+v, %v", r, err)
		}
		return r
	}
	pods, deploy, nodes := prefix+"pods/read", prefix+"apps/deployments/write", prefix+"nodes/delete"

	r := decide("u1", nil, "default", pods, deploy, nodes)
	if !r.Decisions[0].Allowed || !r.Decisions[1].Allowed || r.Decisions[2].Allowed {
		t.Fatalf("decisions: %+v (the expired Cluster Admin, the Owner on a cluster or the Robot must not allow nodes/delete)", r.Decisions)
	}
	// pods/read rests on the longer-lasting Writer, not on the Viewer.
	if !strings.Contains(r.Decisions[0].Reason, "Writer assigned to user u1 at cluster c until "+later.Format(time.RFC3339)) {
		t.Errorf("reason: %s", r.Decisions[0].Reason)
	}
	if !r.ValidUntil.Equal(later) {
		t.Errorf("ValidUntil = %v, want %v (the Writer's expiry)", r.ValidUntil, later)
	}
	// Two decisions on two assignments: the sooner expiry bounds them.
	if r := decide("u1", nil, "default", pods, prefix+"nodes/read"); !r.Decisions[1].Allowed || !r.ValidUntil.Equal(soon) {
		t.Errorf("ValidUntil = %v, want %v (the node reader's expiry): %+v", r.ValidUntil, soon, r.Decisions)
	}
	// A group's namespace assignment that does not expire: no bound.
	r = decide("u9", []string{"g1"}, "team-a", prefix+"rbac.authorization.k8s.io/rolebindings/write")
	if !r.Decisions[0].Allowed || !r.ValidUntil.IsZero() || !strings.Contains(r.Decisions[0].Reason, "Admin assigned to group g1 at namespace team-a") {
		t.Errorf("group in its namespace: %+v", r)
	}
	if r := decide("u9", []string{"g1"}, "team-b", pods); r.Decisions[0].Allowed {
		t.Errorf("group outside its namespace: %+v", r)
	}
	// Denials carry no bound.
	if r := decide("u9", nil, "default", pods); r.Decisions[0].Allowed || !r.ValidUntil.IsZero() {
		t.Errorf("nobody: %+v", r)
	}
	// Once both expire, nothing is left for u1 but the missing role.
	r2, err := Decide(f.ctx, f.st, "c", &api.CheckAccessRequest{Subject: api.Subject{OID: "u1"}, Actions: []string{pods}}, later, nil)
	if err != nil || r2.Decisions[0].Allowed {
		t.Errorf("after expiry: %+v, %v", r2, err)
	}
	if _, err := Decide(f.ctx, f.st, "", &api.CheckAccessRequest{Subject: api.Subject{OID: "u1"}, Actions: []string{pods}}, t0, nil); err == nil {
		t.Error("Decide without a cluster: no error")
	}
}

func TestManagementRoles(t *testing.T) {
	f := newFixture(t, "c")
	f.assign("m1", api.RoleReader, "User", "u1", "", "", time.Time{})
	f.assign("m2", api.RoleOwner, "Group", "admins", "", "", t0.Add(time.Hour))
	f.assign("m3", api.RoleContributor, "User", "u1", "", "", t0) // expired
	f.assign("m4", api.RoleReader, "Group", "readers", "", "", time.Time{})
	f.assign("m5", api.RoleViewer, "User", "u1", "c", "", time.Time{}) // a cluster role: no management role
	f.token("tok", api.RoleContributor, t0.Add(time.Minute))
	f.token("old", api.RoleOwner, t0)
	for _, tc := range []struct {
		p    api.Principal
		want []string
	}{
		{api.Principal{Kind: api.PrincipalKindAdmin, ID: "admin"}, []string{api.RoleOwner}},
		{api.Principal{Kind: api.PrincipalKindToken, ID: "tok"}, []string{api.RoleContributor}},
		{api.Principal{Kind: api.PrincipalKindToken, ID: "old"}, nil},     // expired
		{api.Principal{Kind: api.PrincipalKindToken, ID: "missing"}, nil}, // revoked
		{api.Principal{Kind: api.PrincipalKindUser, ID: "u1"}, []string{api.RoleReader}},
		{api.Principal{Kind: api.PrincipalKindUser, ID: "u1", Groups: []string{"readers", "admins"}}, []string{api.RoleOwner, api.RoleReader}},
		{api.Principal{Kind: api.PrincipalKindUser, ID: "u2"}, nil},
		{api.Principal{Kind: api.PrincipalKindUser, ID: "tok"}, nil}, // a user is not a token
		{api.Principal{Kind: "robot", ID: "u1"}, nil},
	} {
		got, err := ManagementRoles(f.ctx, f.st, tc.p, t0)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ManagementRoles(%+v) = %v, %v; want %v", tc.p, got, err, tc.want)
		}
	}
}

func TestMgmtAllows(t *testing.T) {
	ops := []Op{OpWhoAmI, OpClientCertificate, OpRead, OpReadAudit, OpWriteClusters, OpWriteTokens, OpAssignRoles}
	for _, tc := range []struct {
		roles []string
		want  []Op
	}{
		{[]string{api.RoleOwner}, ops},
		{[]string{api.RoleContributor}, []Op{OpWhoAmI, OpClientCertificate, OpRead, OpReadAudit, OpWriteClusters, OpWriteTokens}},
		{[]string{api.RoleReader}, []Op{OpWhoAmI, OpClientCertificate, OpRead}},
		{nil, []Op{OpWhoAmI, OpClientCertificate}},
		{[]string{api.RoleClusterAdmin, "custom"}, []Op{OpWhoAmI, OpClientCertificate}}, // cluster roles count for nothing here
		{[]string{api.RoleReader, api.RoleOwner}, ops},                                  // the highest counts
	} {
		for _, op := range ops {
			if got, want := MgmtAllows(tc.roles, op), slices.Contains(tc.want, op); got != want {
				t.Errorf("MgmtAllows(%v, %s) = %v", tc.roles, op, got)
			}
		}
	}
	if MgmtAllows([]string{api.RoleOwner}, "bogus") {
		t.Error("an unknown op is allowed")
	}
}

func TestRoleRank(t *testing.T) {
	for _, tc := range []struct {
		role, than string
		want       bool
	}{
		{api.RoleReader, api.RoleOwner, true},
		{api.RoleContributor, api.RoleContributor, true},
		{api.RoleOwner, api.RoleContributor, false}, // a Contributor cannot mint an Owner token
		{api.RoleContributor, api.RoleReader, false},
		{api.RoleViewer, api.RoleOwner, false}, // not a management role
		{"", api.RoleOwner, false},
		{api.RoleReader, "", false},
	} {
		if got := AtMost(tc.role, tc.than); got != tc.want {
			t.Errorf("AtMost(%q, %q) = %v", tc.role, tc.than, got)
		}
	}
	if h := Highest([]string{api.RoleReader, api.RoleViewer, api.RoleContributor}); h != api.RoleContributor {
		t.Errorf("Highest = %q", h)
	}
	if h := Highest(nil); h != "" {
		t.Errorf("Highest(nil) = %q", h)
	}
	for _, n := range ManagementNames {
		if r, ok := Management[n]; !ok || r.Name != n || !r.BuiltIn || r.Description == "" || r.DataActions == nil || !IsBuiltIn(n) || !IsManagement(n) {
			t.Errorf("management role %q: %+v", n, r)
		}
	}
	if IsManagement(api.RoleViewer) || !IsBuiltIn(api.RoleClusterUser) || IsBuiltIn("custom") {
		t.Error("IsManagement/IsBuiltIn")
	}
	if got := PrincipalRef(api.Principal{Kind: api.PrincipalKindUser, ID: "oid-1", Name: "a@b"}); got != "user:oid-1" {
		t.Errorf("PrincipalRef = %q", got)
	}
	if got := PrincipalRef(api.Principal{Kind: api.PrincipalKindAdmin, ID: "admin"}); got != "admin" {
		t.Errorf("PrincipalRef(admin) = %q", got)
	}
}

func TestCanConnect(t *testing.T) {
	f := newFixture(t, "c", "other")
	hour, day := t0.Add(time.Hour), t0.Add(24*time.Hour)
	if err := f.st.PutRole(f.ctx, &store.RoleDefinition{Name: "pods-only", DataActions: []string{prefix + "pods/*"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.PutRole(f.ctx, &store.RoleDefinition{Name: "everything", DataActions: []string{prefix + "*"}}); err != nil {
		t.Fatal(err)
	}
	f.assign("1", api.RoleViewer, "User", "ns-viewer", "c", "team-a", time.Time{})
	f.assign("2", api.RoleClusterUser, "Group", "g-connect", "c", "", hour)
	f.assign("3", api.RoleWriter, "Group", "g-connect", "c", "", day)
	f.assign("4", "pods-only", "User", "podder", "c", "", time.Time{})
	f.assign("5", "everything", "User", "custom", "c", "", time.Time{})
	f.assign("6", api.RoleClusterAdmin, "User", "expired", "c", "", t0)
	f.assign("7", api.RoleViewer, "User", "elsewhere", "other", "", time.Time{})
	f.assign("8", api.RoleContributor, "User", "contrib", "", "", day)
	f.assign("9", api.RoleReader, "User", "reader", "", "", time.Time{})
	f.assign("10", api.RoleViewer, "User", "tok-r", "c", "", time.Time{}) // names a token's ID as a user
	f.token("tok-c", api.RoleContributor, hour)
	f.token("tok-r", api.RoleReader, day)
	user := func(id string, groups ...string) api.Principal {
		return api.Principal{Kind: api.PrincipalKindUser, ID: id, Groups: groups}
	}
	for _, tc := range []struct {
		p       api.Principal
		cluster string
		ok      bool
		until   time.Time
		reason  string
	}{
		{user("ns-viewer"), "c", true, time.Time{}, "Viewer assigned to user ns-viewer at namespace team-a of cluster c"},
		{user("ns-viewer"), "other", false, time.Time{}, "no role assignment"},
		{user("x", "g-connect"), "c", true, day, "Writer assigned to group g-connect at cluster c until "}, // the longer of two
		{user("podder"), "c", false, time.Time{}, "no role assignment"},
		{user("custom"), "c", true, time.Time{}, "everything assigned"},
		{user("expired"), "c", false, time.Time{}, "no role assignment"},
		{user("contrib"), "c", true, day, "Contributor assigned to user contrib at relay scope"},
		{user("contrib"), "not-registered", true, day, "Contributor"},
		{user("reader"), "c", false, time.Time{}, "no role assignment"},
		{user("elsewhere"), "other", true, time.Time{}, "Viewer"},
		{api.Principal{Kind: api.PrincipalKindAdmin, ID: "admin"}, "c", true, time.Time{}, "admin token is Owner"},
		{api.Principal{Kind: api.PrincipalKindToken, ID: "tok-c"}, "c", true, hour, "API token tok-c has role Contributor"},
		{api.Principal{Kind: api.PrincipalKindToken, ID: "tok-r"}, "c", false, time.Time{}, "no role assignment"}, // Reader; assignment 10 is for a user
		{api.Principal{Kind: api.PrincipalKindToken, ID: "gone"}, "c", false, time.Time{}, "no role assignment"},
		{user("ns-viewer"), "", false, time.Time{}, "no role assignment"},
	} {
		g, err := CanConnect(f.ctx, f.st, tc.cluster, tc.p, t0)
		if err != nil || g.Allowed != tc.ok || !g.Until.Equal(tc.until) || !strings.Contains(g.Reason, tc.reason) {
			t.Errorf("CanConnect(%s, %+v) = %+v, %v; want allowed=%v until %v, reason with %q", tc.cluster, tc.p, g, err, tc.ok, tc.until, tc.reason)
		}
	}
	// An unregistered cluster reads exactly like one without an assignment.
	a, errA := CanConnect(f.ctx, f.st, "nope", user("ns-viewer"), t0)
	b, errB := CanConnect(f.ctx, f.st, "nope", user("ns-viewer"), t0)
	f.assign("11", api.RoleViewer, "User", "someone", "other", "", time.Time{})
	c, errC := CanConnect(f.ctx, f.st, "other", user("ns-viewer"), t0)
	if errA != nil || errB != nil || errC != nil || a.Allowed || c.Allowed ||
		a.Reason != strings.Replace(c.Reason, "other", "nope", 1) || a != b {
		t.Errorf("missing cluster %+v (%v) vs cluster without assignment %+v (%v)", a, errA, c, errC)
	}
	// After the hour, the token is gone and so is the Cluster User; the Writer stays.
	if g, _ := CanConnect(f.ctx, f.st, "c", api.Principal{Kind: api.PrincipalKindToken, ID: "tok-c"}, hour); g.Allowed {
		t.Errorf("expired token: %+v", g)
	}
	if g, _ := CanConnect(f.ctx, f.st, "c", user("x", "g-connect"), hour); !g.Allowed || !g.Until.Equal(day) {
		t.Errorf("group after an hour: %+v", g)
	}
	if g, _ := CanConnect(f.ctx, f.st, "c", user("x", "g-connect"), day); g.Allowed {
		t.Errorf("group after a day: %+v", g)
	}
}

// orphans is a store that still lists assignments of a deleted cluster, as
// one written by an older relay can.
type orphans struct {
	*store.Bolt
	extra []*store.RoleAssignment
}

func (o orphans) ListAssignments(ctx context.Context, cluster string) ([]*store.RoleAssignment, error) {
	as, err := o.Bolt.ListAssignments(ctx, cluster)
	return append(as, o.extra...), err
}

func TestCanConnectIgnoresOrphans(t *testing.T) {
	f := newFixture(t)
	st := orphans{f.st, []*store.RoleAssignment{{ID: "o", Role: api.RoleClusterAdmin, PrincipalType: "User", PrincipalID: "u1", Cluster: "gone"}}}
	g, err := CanConnect(f.ctx, st, "gone", api.Principal{Kind: api.PrincipalKindUser, ID: "u1"}, t0)
	if err != nil || g.Allowed {
		t.Errorf("assignment of a deleted cluster: %+v, %v", g, err)
	}
}
