package guard

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
	"github.com/clusterconnect/clusterconnect/test/oidc"
)

const prefix = "Microsoft.Kubernetes/connectedClusters/"

var counter atomic.Int64

func unique(p string) string { return fmt.Sprintf("%s-%d", p, counter.Add(1)) }

// user is an Entra user of the test tenant with a kubeconfig that goes
// straight to the apiserver with its token.
type user struct {
	name, oid, token, kubeconfig string
	groups                       []string
}

func newUser(t *testing.T, groups ...string) *user {
	t.Helper()
	u := &user{name: unique("user") + "@contoso.example", oid: unique("oid"), groups: groups}
	var err error
	u.token, err = shared.issuer.Mint(oidc.Token{Tenant: tenant, Audience: clientID, UPN: u.name, OID: u.oid, Groups: groups})
	if err != nil {
		t.Fatal(err)
	}
	u.kubeconfig = filepath.Join(env.Dir, unique("kubeconfig"))
	if err := env.Cluster.WriteKubeconfig(u.kubeconfig, u.token); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u *user) kubectl(ctx context.Context, args ...string) (string, string, error) {
	return kubectl.Run(ctx, u.kubeconfig, nil, nil, args...)
}

// ok runs kubectl and fails the test unless it succeeds.
func (u *user) ok(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, stderr, err := u.kubectl(ctx, args...)
	if err != nil {
		t.Fatalf("%s: kubectl %s: %v\n%s", u.name, strings.Join(args, " "), err, stderr)
	}
	return out
}

// forbidden runs kubectl and fails the test unless the apiserver refused
// it with 403 mentioning want (the data action guard denied).
func (u *user) forbidden(t *testing.T, ctx context.Context, want string, args ...string) {
	t.Helper()
	_, stderr, err := u.kubectl(ctx, args...)
	if err == nil || !strings.Contains(strings.ToLower(stderr), "forbidden") || !strings.Contains(stderr, want) {
		t.Errorf("%s: kubectl %s: want Forbidden mentioning %q, got %v\n%s", u.name, strings.Join(args, " "), want, err, stderr)
	}
}

// canI runs kubectl auth can-i, which must agree with want.
func (u *user) canI(t *testing.T, ctx context.Context, want bool, args ...string) {
	t.Helper()
	out, stderr, err := u.kubectl(ctx, append([]string{"auth", "can-i"}, args...)...)
	got := strings.TrimSpace(out) == "yes"
	if err != nil && kubectl.ExitCode(err) != 1 {
		t.Fatalf("kubectl auth can-i %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	if got != want {
		t.Errorf("%s: kubectl auth can-i %s = %q, want %v\n%s", u.name, strings.Join(args, " "), out, want, stderr)
	}
}

// ssar asks the apiserver whether the user may, as the user.
func (u *user) ssar(t *testing.T, ctx context.Context, ra *authzv1.ResourceAttributes) authzv1.SubjectAccessReviewStatus {
	t.Helper()
	cfg := rest.CopyConfig(env.Cluster.RESTConfig())
	cfg.BearerToken, cfg.BearerTokenFile, cfg.Username, cfg.Password = u.token, "", "", ""
	cfg.CertFile, cfg.KeyFile, cfg.CertData, cfg.KeyData = "", "", nil, nil
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{
		Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: ra}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Status
}

// api calls the relay's management API with the admin token.
func api(t *testing.T, ctx context.Context, method, path, body string) (int, []byte) {
	t.Helper()
	r := shared.relay
	tok, err := r.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := r.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, method, r.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// assign creates a role assignment (typ User or Group; ns "" for the
// cluster scope) and returns its ID.
func assign(t *testing.T, ctx context.Context, role, principal, typ, ns string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"role": role, "principalId": principal, "principalType": typ, "cluster": clusterName, "namespace": ns})
	code, b := api(t, ctx, "POST", "/api/v1/roleassignments", string(body))
	if code != http.StatusCreated {
		t.Fatalf("assign %s to %s: HTTP %d: %s", role, principal, code, b)
	}
	var a struct{ ID string }
	if err := json.Unmarshal(b, &a); err != nil || a.ID == "" {
		t.Fatalf("assignment %s: %v", b, err)
	}
	return a.ID
}

func TestWhoamiThroughTokenWebhook(t *testing.T) {
	ctx := harness.TestContext(t)
	u := newUser(t, "grp-one", "grp-two")
	var r authnv1.SelfSubjectReview
	if err := json.Unmarshal([]byte(u.ok(t, ctx, "auth", "whoami", "-o", "json")), &r); err != nil {
		t.Fatal(err)
	}
	ui := r.Status.UserInfo
	if ui.Username != u.name || ui.UID != u.oid || !slices.Equal(ui.Groups, []string{"grp-one", "grp-two", "system:authenticated"}) ||
		!slices.Equal(ui.Extra["oid"], authnv1.ExtraValue{u.oid}) || !slices.Equal(ui.Extra["tid"], authnv1.ExtraValue{tenant}) {
		t.Errorf("whoami %+v", ui)
	}
	expired := newUser(t)
	expired.token = shared.issuer.MustMint(oidc.Token{Tenant: tenant, Audience: clientID, UPN: expired.name, OID: expired.oid, TTL: -time.Hour})
	env.Cluster.WriteKubeconfig(expired.kubeconfig, expired.token)
	if _, stderr, err := expired.kubectl(ctx, "get", "pods"); err == nil || !strings.Contains(stderr, "You must be logged in") {
		t.Errorf("expired token: %v\n%s", err, stderr)
	}
}

func TestViewer(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	u := newUser(t)
	assign(t, ctx, "Viewer", u.oid, "User", "")
	u.ok(t, ctx, "get", "pods", "-n", ns)
	u.ok(t, ctx, "get", "configmaps", "-n", ns)
	u.forbidden(t, ctx, prefix+"secrets/read denied at namespace "+ns, "get", "secrets", "-n", ns)
	u.forbidden(t, ctx, prefix+"apps/deployments/write denied", "create", "deployment", "web", "--image=nginx", "-n", ns)
	u.canI(t, ctx, true, "get", "pods", "-n", ns)
	u.canI(t, ctx, true, "list", "deployments.apps", "-n", ns)
	u.canI(t, ctx, false, "get", "secrets", "-n", ns)
	u.canI(t, ctx, false, "create", "deployments.apps", "-n", ns)
	u.canI(t, ctx, false, "create", "pods/exec", "-n", ns)
	st := u.ssar(t, ctx, &authzv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "secrets"})
	if st.Allowed || !st.Denied || !strings.Contains(st.Reason, "secrets/read") {
		t.Errorf("SelfSubjectAccessReview: %+v", st)
	}
}

func TestWriter(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	u := newUser(t)
	assign(t, ctx, "Writer", u.oid, "User", ns)
	u.ok(t, ctx, "create", "deployment", "web", "--image=nginx", "-n", ns)
	u.ok(t, ctx, "create", "secret", "generic", "s1", "--from-literal=a=b", "-n", ns)
	if out := u.ok(t, ctx, "get", "secrets", "-n", ns, "-o", "name"); !strings.Contains(out, "secret/s1") {
		t.Errorf("get secrets: %s", out)
	}
	u.forbidden(t, ctx, prefix+"rbac.authorization.k8s.io/rolebindings/write denied", "create", "rolebinding", "rb", "--role=x", "--user=y", "-n", ns)
	u.canI(t, ctx, true, "create", "deployments.apps", "-n", ns)
	u.canI(t, ctx, true, "get", "secrets", "-n", ns)
	u.canI(t, ctx, false, "create", "rolebindings.rbac.authorization.k8s.io", "-n", ns)
}

func TestAdminScopedToNamespace(t *testing.T) {
	ctx := harness.TestContext(t)
	ns, other := env.Namespace(t, ctx), env.Namespace(t, ctx)
	u := newUser(t)
	assign(t, ctx, "Admin", u.oid, "User", ns)
	u.ok(t, ctx, "create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", ns)
	u.ok(t, ctx, "create", "rolebinding", "pod-reader", "--role=pod-reader", "--user=someone", "-n", ns)
	u.ok(t, ctx, "create", "configmap", "c1", "--from-literal=a=b", "-n", ns)
	u.ok(t, ctx, "get", "pods", "-n", ns)
	u.forbidden(t, ctx, prefix+"pods/read denied at namespace "+other, "get", "pods", "-n", other)
	u.forbidden(t, ctx, "rolebindings/write denied at namespace "+other, "create", "rolebinding", "x", "--role=pod-reader", "--user=someone", "-n", other)
	u.forbidden(t, ctx, prefix+"namespaces/read denied at cluster scope", "get", "namespaces")
	u.canI(t, ctx, true, "create", "rolebindings.rbac.authorization.k8s.io", "-n", ns)
	u.canI(t, ctx, false, "create", "rolebindings.rbac.authorization.k8s.io", "-n", other)
	u.canI(t, ctx, false, "get", "pods", "--all-namespaces")
}

func TestGroupAssignmentAppliesToMembers(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	group := unique("grp-readers")
	// As an operator would: connectctl role assign (the management API
	// while connectctl lacks the verbs).
	out, err := shared.relay.Connectctl(ctx, "role", "assign", "--assignee", group, "--assignee-type", "Group", "--role", "Viewer",
		"--cluster", clusterName, "--namespace", ns)
	switch {
	case err != nil && strings.Contains(out, `unknown command "role"`):
		t.Log("connectctl has no role verbs yet: assigning with the management API")
		assign(t, ctx, "Viewer", group, "Group", ns)
	case err != nil:
		t.Fatal(err)
	default:
		out, err := shared.relay.Connectctl(ctx, "role", "list", "--cluster", clusterName)
		if err != nil || !strings.Contains(out, group) {
			t.Errorf("role list: %v\n%s", err, out)
		}
	}
	member, outsider := newUser(t, "grp-other", group), newUser(t, "grp-other")
	member.ok(t, ctx, "get", "pods", "-n", ns)
	member.canI(t, ctx, true, "list", "pods", "-n", ns)
	outsider.forbidden(t, ctx, prefix+"pods/read denied", "get", "pods", "-n", ns)
	outsider.canI(t, ctx, false, "list", "pods", "-n", ns)
}

func TestClusterAdmin(t *testing.T) {
	ctx := harness.TestContext(t)
	u := newUser(t)
	assign(t, ctx, "Cluster Admin", u.oid, "User", "")
	ns := unique("made-by-cluster-admin")
	u.ok(t, ctx, "create", "namespace", ns)
	u.ok(t, ctx, "get", "nodes")
	u.ok(t, ctx, "get", "secrets", "--all-namespaces")
	u.ok(t, ctx, "create", "clusterrole", unique("cr"), "--verb=get", "--resource=pods")
	u.ok(t, ctx, "create", "deployment", "web", "--image=nginx", "-n", ns)
	u.canI(t, ctx, true, "*", "*")
	u.canI(t, ctx, true, "delete", "nodes")
}

func TestCustomRoleNotDataActions(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	role := unique("all-but-secrets")
	code, b := api(t, ctx, "PUT", "/api/v1/roledefinitions/"+role,
		`{"description":"everything but secrets","dataActions":["`+prefix+`*"],"notDataActions":["`+prefix+`secrets/*"]}`)
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("define role: HTTP %d: %s", code, b)
	}
	u := newUser(t)
	assign(t, ctx, role, u.oid, "User", ns)
	u.ok(t, ctx, "create", "configmap", "c1", "--from-literal=a=b", "-n", ns)
	u.ok(t, ctx, "get", "pods", "-n", ns)
	u.forbidden(t, ctx, prefix+"secrets/read denied", "get", "secrets", "-n", ns)
	u.forbidden(t, ctx, prefix+"secrets/write denied", "create", "secret", "generic", "s", "--from-literal=a=b", "-n", ns)
	u.canI(t, ctx, false, "get", "secrets", "-n", ns)
	u.canI(t, ctx, true, "delete", "configmaps", "-n", ns)
}

func TestRemovedAssignmentTakesEffectWithinTTL(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	u := newUser(t)
	id := assign(t, ctx, "Viewer", u.oid, "User", ns)
	u.ok(t, ctx, "get", "pods", "-n", ns)
	code, b := api(t, ctx, "DELETE", "/api/v1/roleassignments/"+id, "")
	if code != http.StatusNoContent {
		t.Fatalf("remove assignment: HTTP %d: %s", code, b)
	}
	removed := time.Now()
	// guard's allowed TTL plus the apiserver's one second, and slack.
	limit := guardAllowedTTL + 4*time.Second
	for {
		_, stderr, err := u.kubectl(ctx, "get", "pods", "-n", ns)
		if err != nil && strings.Contains(stderr, "(Forbidden)") {
			break
		}
		if time.Since(removed) > limit {
			t.Fatalf("still allowed %s after the assignment was removed", time.Since(removed))
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("revoked after %s", time.Since(removed).Round(100*time.Millisecond))
	u.canI(t, ctx, false, "get", "pods", "-n", ns)
}

func TestServiceAccountsUseRBAC(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	cs, err := env.Cluster.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	cr := unique("pod-lister")
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: cr},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "sa"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "default", Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := env.Cluster.ServiceAccountToken(ctx, ns, "default", false)
	if err != nil {
		t.Fatal(err)
	}
	sa := &user{name: "system:serviceaccount:" + ns + ":default", token: tok, kubeconfig: filepath.Join(env.Dir, unique("sa-kubeconfig"))}
	if err := env.Cluster.WriteKubeconfig(sa.kubeconfig, tok); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second) // RBAC sees the binding through a watch
	for {
		if _, _, err := sa.kubectl(ctx, "get", "pods", "-n", ns); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("service account never allowed by RBAC: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, stderr, err := sa.kubectl(ctx, "get", "secrets", "-n", ns)
	if err == nil || !strings.Contains(stderr, "(Forbidden)") || strings.Contains(stderr, prefix) {
		t.Errorf("service account get secrets: want RBAC's Forbidden without guard's reason: %v\n%s", err, stderr)
	}
	sa.canI(t, ctx, true, "list", "pods", "-n", ns)
	sa.canI(t, ctx, false, "list", "secrets", "-n", ns)
}

func TestSkipGroupHasNoOpinion(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	u := newUser(t, "grp-breakglass")
	st := u.ssar(t, ctx, &authzv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "pods"})
	if st.Allowed || st.Denied {
		t.Errorf("skipped group: %+v", st)
	}
}

// guardSAR posts a review straight to a guard process.
func guardSAR(t *testing.T, ctx context.Context, g *harness.Guard, spec authzv1.SubjectAccessReviewSpec) authzv1.SubjectAccessReviewStatus {
	t.Helper()
	ca, _ := os.ReadFile(g.TLS.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	body, _ := json.Marshal(authzv1.SubjectAccessReview{TypeMeta: metav1.TypeMeta{APIVersion: "authorization.k8s.io/v1", Kind: "SubjectAccessReview"}, Spec: spec})
	req, _ := http.NewRequestWithContext(ctx, "POST", g.URL+"/subjectaccessreviews", bytes.NewReader(body))
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r authzv1.SubjectAccessReview
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r.Status
}

func metrics(t *testing.T, g *harness.Guard) string {
	t.Helper()
	resp, err := http.Get(g.HealthURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestRelayDown stops the relay: cached decisions keep working, others
// follow --relay-failure-mode (deny for the apiserver's guard, no opinion
// for the second guard), and decisions come back with the relay.
func TestRelayDown(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	u := newUser(t)
	assign(t, ctx, "Viewer", u.oid, "User", ns)
	u.ok(t, ctx, "get", "pods", "-n", ns) // cached by guard for guardAllowedTTL
	spec := authzv1.SubjectAccessReviewSpec{User: u.name, UID: u.oid, Groups: []string{"system:authenticated"},
		Extra:              map[string]authzv1.ExtraValue{"oid": {u.oid}, "tid": {tenant}},
		ResourceAttributes: &authzv1.ResourceAttributes{Namespace: ns, Verb: "list", Resource: "pods"}}
	if st := guardSAR(t, ctx, shared.guardNoOp, spec); !st.Allowed {
		t.Fatalf("no-opinion guard with the relay up: %+v", st)
	}

	r := shared.relay
	r.Stop()
	down := time.Now()
	time.Sleep(1100 * time.Millisecond) // past the apiserver's own cache
	u.ok(t, ctx, "get", "pods", "-n", ns)
	u.forbidden(t, ctx, "the relay could not decide "+prefix+"configmaps/read at namespace "+ns, "get", "configmaps", "-n", ns)
	st := u.ssar(t, ctx, &authzv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "services"})
	if st.Allowed || !st.Denied || !strings.Contains(st.Reason, "could not decide") {
		t.Errorf("deny mode, relay down: %+v", st)
	}
	if st := guardSAR(t, ctx, shared.guardNoOp, spec); !st.Allowed {
		t.Errorf("no-opinion guard, cached: %+v", st)
	}
	spec.ResourceAttributes.Resource = "services"
	if st := guardSAR(t, ctx, shared.guardNoOp, spec); st.Allowed || st.Denied || !strings.Contains(st.Reason, "could not decide") {
		t.Errorf("no-opinion guard, relay down: %+v", st)
	}
	if time.Since(down) > guardAllowedTTL {
		t.Fatalf("the checks took %s, longer than the cache TTL: the cached decisions were not tested", time.Since(down))
	}
	if m := metrics(t, shared.guard); !strings.Contains(m, `guard_authz_decisions_total{result="denied",source="relay_error"}`) ||
		!strings.Contains(m, `guard_authz_cache_lookups_total{result="hit"}`) {
		t.Errorf("metrics lack relay errors or cache hits:\n%s", m)
	}

	if err := r.Start(ctx); err != nil { // same port, same state
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, _, err := u.kubectl(ctx, "get", "configmaps", "-n", ns); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("decisions did not come back with the relay")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
