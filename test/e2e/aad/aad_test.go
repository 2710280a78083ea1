package aad

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/clusterconnect/clusterconnect/test/checks"
	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
	"github.com/clusterconnect/clusterconnect/test/kubelet"
	"github.com/clusterconnect/clusterconnect/test/oidc"
)

var counter atomic.Int64

// unique returns a name unique to this run, for users, groups and oids.
func unique(prefix string) string { return fmt.Sprintf("%s-%d", prefix, counter.Add(1)) }

// bind creates a RoleBinding in ns of ClusterRole role to subject (kind
// User or Group).
func bind(t *testing.T, ctx context.Context, ns, kind, subject, role string) {
	t.Helper()
	cs, _ := env.Cluster.Clientset()
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: unique("rb")},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: kind, Name: subject}},
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// RBAC sees new bindings through a watch; wait until it decides with
	// this one, so that the test does not race it.
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		ResourceAttributes: &authzv1.ResourceAttributes{Namespace: ns, Verb: "list", Resource: "pods"},
	}}
	if kind == "Group" {
		sar.Spec.User, sar.Spec.Groups = "probe", []string{subject}
	} else {
		sar.Spec.User = subject
	}
	for {
		r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("RBAC never allowed %s %s to list pods in %s: %v", kind, subject, ns, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// raw is the path of an apiserver path through the relay, for kubectl get
// --raw (whose paths start at the host's root).
// raw is an apiserver path for kubectl get --raw: the relay-issued
// kubeconfig names the cluster by TLS server name, so --raw paths are the
// apiserver's own (client-go before 1.34 drops the server URL's path).
func raw(p string) string { return p }

// user is an Entra user of the test tenant.
func user(upn string, groups ...string) oidc.Token {
	return oidc.Token{Tenant: tenant, Audience: clientID, UPN: upn, OID: unique("oid"), Groups: groups}
}

// kubeconfigFor writes a relay-issued kubeconfig carrying token.
func kubeconfigFor(t *testing.T, ctx context.Context, token string) string {
	t.Helper()
	kc, err := shared.relay.Kubeconfig(ctx, clusterName, token)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

func mint(t *testing.T, tok oidc.Token) string {
	t.Helper()
	s, err := shared.issuer.Mint(tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func kubectlOK(t *testing.T, ctx context.Context, kc string, args ...string) string {
	t.Helper()
	out, stderr, err := kubectl.Run(ctx, kc, nil, nil, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// whoami runs kubectl auth whoami through the chain.
func whoami(t *testing.T, ctx context.Context, kc string) authnv1.UserInfo {
	t.Helper()
	var r authnv1.SelfSubjectReview
	if err := json.Unmarshal([]byte(kubectlOK(t, ctx, kc, "auth", "whoami", "-o", "json")), &r); err != nil {
		t.Fatal(err)
	}
	return r.Status.UserInfo
}

func createPod(t *testing.T, ctx context.Context, ns, name string) {
	t.Helper()
	cs, _ := env.Cluster.Clientset()
	if err := kubelet.RunPod(ctx, cs, ns, name, nodeName, "main"); err != nil {
		t.Fatal(err)
	}
}

func TestGroupBoundUserListsPodsAndWhoami(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	group := unique("grp-readers")
	bind(t, ctx, ns, "Group", group, viewRole)
	createPod(t, ctx, ns, "pod1")
	tok := user("alice@contoso.example", group, "grp-other")
	kc := kubeconfigFor(t, ctx, mint(t, tok))

	if out := kubectlOK(t, ctx, kc, "get", "pods", "-n", ns, "-o", "name"); !strings.Contains(out, "pod/pod1") {
		t.Errorf("get pods as a group-bound user:\n%s", out)
	}
	ui := whoami(t, ctx, kc)
	if ui.Username != "alice@contoso.example" {
		t.Errorf("whoami user %q", ui.Username)
	}
	if !slices.Equal(ui.Groups, []string{group, "grp-other", "system:authenticated"}) {
		t.Errorf("whoami groups %q", ui.Groups)
	}
	if !slices.Equal(ui.Extra["oid"], authnv1.ExtraValue{tok.OID}) || !slices.Equal(ui.Extra["tid"], authnv1.ExtraValue{tenant}) {
		t.Errorf("whoami extras %v", ui.Extra)
	}
	// Not bound outside ns.
	_, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "pods", "-n", "default")
	if err == nil || !strings.Contains(stderr, `User "alice@contoso.example" cannot list resource "pods"`) {
		t.Errorf("outside the bound namespace: %v\n%s", err, stderr)
	}
}

func TestV1TokenUserBinding(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	upn := unique("bob") + "@contoso.example"
	bind(t, ctx, ns, "User", upn, adminRole)
	tok := user(upn)
	tok.Version, tok.Audience = 1, appIDURI
	kc := kubeconfigFor(t, ctx, mint(t, tok))
	kubectlOK(t, ctx, kc, "create", "configmap", "made-by-bob", "-n", ns, "--from-literal=a=b")
	ui := whoami(t, ctx, kc)
	if ui.Username != upn || !slices.Equal(ui.Groups, []string{"system:authenticated"}) {
		t.Errorf("whoami %+v", ui)
	}
}

func TestUnboundUserForbiddenByAPIServer(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	kc := kubeconfigFor(t, ctx, mint(t, user("mallory@contoso.example", "grp-nobody")))
	_, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "pods", "-n", ns)
	if err == nil || !strings.Contains(stderr, "Error from server (Forbidden)") ||
		!strings.Contains(stderr, `User "mallory@contoso.example" cannot list resource "pods" in API group "" in the namespace "`+ns+`"`) {
		t.Fatalf("unbound user: err=%v\n%s", err, stderr)
	}
}

func TestRefusedTokensGet401WithReason(t *testing.T) {
	ctx := harness.TestContext(t)
	good := user("carol@contoso.example", "grp-x")
	mod := func(f func(*oidc.Token)) string {
		tok := good
		f(&tok)
		return mint(t, tok)
	}
	tampered, err := oidc.Tamper(mint(t, good), "preferred_username", "admin@contoso.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, token, reason, msg string }{
		{"expired", mod(func(t *oidc.Token) { t.TTL = -10 * time.Minute }), "expired", "the token expired at"},
		{"wrong audience", mod(func(t *oidc.Token) { t.Audience = "api://another-app" }), "wrong_audience", `audience ["api://another-app"]`},
		{"wrong tenant", mod(func(t *oidc.Token) { t.Tenant = otherTenant }), "unknown_issuer", "its tenant is not configured"},
		{"alg none", mod(func(t *oidc.Token) { t.Alg = "none" }), "unsupported_algorithm", `signature algorithm "none" is refused`},
		{"alg HS256", mod(func(t *oidc.Token) { t.Alg = "HS256" }), "unsupported_algorithm", `signature algorithm "HS256" is refused`},
		{"tampered", tampered, "bad_signature", "the signature does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc := kubeconfigFor(t, ctx, tc.token)
			_, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "--raw", raw("/api/v1/namespaces/default/pods"))
			if err == nil || !strings.Contains(stderr, "error: You must be logged in to the server (kube-aad-proxy: token rejected") {
				t.Fatalf("want 401 from the proxy: err=%v\n%s", err, stderr)
			}
			for _, want := range []string{"kube-aad-proxy: token rejected (" + tc.reason + ")", tc.msg} {
				if !strings.Contains(stderr, want) {
					t.Errorf("kubectl stderr lacks %q:\n%s", want, stderr)
				}
			}
			// And what an ordinary command prints.
			_, stderr, err = kubectl.Run(ctx, kc, nil, nil, "get", "pods", "-n", "default")
			if err == nil || !strings.Contains(stderr, "You must be logged in to the server") {
				t.Errorf("kubectl get pods: err=%v\n%s", err, stderr)
			}
		})
	}
	// Every refusal was counted by reason.
	m := metrics(t, ctx)
	for _, r := range []string{"expired", "wrong_audience", "unknown_issuer", "unsupported_algorithm", "bad_signature"} {
		if v := metricValue(m, `aadproxy_authn_failures_total{reason="`+r+`"}`); v < 1 {
			t.Errorf("authn failures{reason=%s} = %v", r, v)
		}
	}
}

// Entra users cannot impersonate through cluster connect: kube-aad-proxy
// already impersonates them.
func TestImpersonationRefusedForEntraUsers(t *testing.T) {
	ctx := harness.TestContext(t)
	kc := kubeconfigFor(t, ctx, mint(t, user("eve@contoso.example", "grp-x")))
	_, stderr, err := kubectl.Run(ctx, kc, nil, nil, "--as=admin", "--as-group=system:masters", "get", "--raw", raw("/api/v1/namespaces"))
	if err == nil || !strings.Contains(stderr, "Forbidden") || !strings.Contains(stderr, "impersonation is not allowed through cluster connect") {
		t.Fatalf("kubectl --as=admin: err=%v\n%s", err, stderr)
	}
	_, stderr, err = kubectl.Run(ctx, kc, nil, nil, "--as=admin", "get", "ns")
	if err == nil || !strings.Contains(stderr, "Forbidden") {
		t.Fatalf("kubectl --as=admin get ns: err=%v\n%s", err, stderr)
	}
	if !strings.Contains(proxyLog(t), "refused a request carrying impersonation headers") {
		t.Error("the refusal was not logged")
	}
}

// Token mode: a service-account token passes through kube-aad-proxy
// unchanged, so the apiserver authorizes its impersonation by RBAC (the
// e2e-admin account is cluster-admin); the relay's audit records whom it
// impersonated.
func TestImpersonationWithServiceAccountToken(t *testing.T) {
	ctx := harness.TestContext(t)
	out, stderr, err := kubectl.Run(ctx, shared.kubeconfig, nil, nil, "--as=jane@example.com", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if err != nil || out != "jane@example.com" {
		t.Fatalf("kubectl --as=jane auth whoami: %q err=%v\n%s", out, err, stderr)
	}
	out, err = shared.relay.Connectctl(ctx, "audit", "--cluster", clusterName, "--since", "5m", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"impersonate": "jane@example.com"`) {
		t.Errorf("no audit record with the impersonated user:\n%s", out)
	}
}

func TestGroupsOverageResolvedFromGraph(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	group := unique("grp-overage")
	bind(t, ctx, ns, "Group", group, viewRole)
	tok := user("frank@contoso.example")
	tok.Overage = true
	groups := []string{group}
	for i := range 240 {
		groups = append(groups, fmt.Sprintf("grp-many-%03d", i))
	}
	shared.issuer.SetMemberGroups(tok.OID, groups)
	kc := kubeconfigFor(t, ctx, mint(t, tok))
	kubectlOK(t, ctx, kc, "get", "pods", "-n", ns)
	ui := whoami(t, ctx, kc)
	if len(ui.Groups) != 242 || !slices.Contains(ui.Groups, group) || !slices.Contains(ui.Groups, "system:authenticated") {
		t.Errorf("whoami of an overage user: %d groups, want 241+system:authenticated", len(ui.Groups))
	}

	// A user Graph cannot resolve: 401, fail closed, with the reason.
	lost := user("gina@contoso.example")
	lost.Overage = true
	kc = kubeconfigFor(t, ctx, mint(t, lost))
	_, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "--raw", raw("/api/v1/namespaces/"+ns+"/pods"))
	if err == nil || !strings.Contains(stderr, "token rejected (groups_overage)") || !strings.Contains(stderr, "looking them up failed") {
		t.Fatalf("unresolvable overage: err=%v\n%s", err, stderr)
	}
}

func TestServiceAccountTokenPassesThrough(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	cs, _ := env.Cluster.Clientset()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bind(t, ctx, ns, "User", "system:serviceaccount:"+ns+":reader", viewRole)
	exp := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "reader", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc := kubeconfigFor(t, ctx, tr.Status.Token)
	kubectlOK(t, ctx, kc, "get", "pods", "-n", ns)
	ui := whoami(t, ctx, kc)
	if ui.Username != "system:serviceaccount:"+ns+":reader" || !slices.Contains(ui.Groups, "system:serviceaccounts:"+ns) {
		t.Errorf("whoami with a service-account token: %+v", ui)
	}
	// The apiserver, not the proxy, judges it: outside ns it is forbidden
	// for this service account (the proxy's own rights do not leak).
	_, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "pods", "-n", "kube-system")
	if err == nil || !strings.Contains(stderr, `"system:serviceaccount:`+ns+`:reader" cannot list resource "pods"`) {
		t.Errorf("outside its namespace: %v\n%s", err, stderr)
	}
	// And a garbage token is the apiserver's 401, not the proxy's.
	kc = kubeconfigFor(t, ctx, "not-a-jwt-at-all")
	_, stderr, err = kubectl.Run(ctx, kc, nil, nil, "get", "--raw", raw("/api"))
	if err == nil || !strings.Contains(stderr, "error: You must be logged in to the server (Unauthorized)") {
		t.Errorf("opaque token: %v\n%s", err, stderr)
	}
}

func TestKeyRotationMidRun(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	group := unique("grp-rotation")
	bind(t, ctx, ns, "Group", group, viewRole)
	iss := shared.issuer
	before := mint(t, user("henry@contoso.example", group))
	kubectlOK(t, ctx, kubeconfigFor(t, ctx, before), "get", "pods", "-n", ns)
	refreshes := metricValue(metrics(t, ctx), `aadproxy_jwks_refreshes_total{result="ok"}`)

	if err := iss.RotateKey(); err != nil {
		t.Fatal(err)
	}
	after := mint(t, user("henry@contoso.example", group))
	kubectlOK(t, ctx, kubeconfigFor(t, ctx, after), "get", "pods", "-n", ns)
	// The token signed with the old key still works while it is published.
	kubectlOK(t, ctx, kubeconfigFor(t, ctx, before), "get", "pods", "-n", ns)
	if got := metricValue(metrics(t, ctx), `aadproxy_jwks_refreshes_total{result="ok"}`); got != refreshes+1 {
		t.Errorf("JWKS refreshes went from %v to %v, want one more", refreshes, got)
	}
	// The old key is withdrawn: a new-key token keeps working.
	iss.DropOldKeys()
	kubectlOK(t, ctx, kubeconfigFor(t, ctx, mint(t, user("henry@contoso.example", group))), "get", "pods", "-n", ns)
}

// TestStreamingAsEntraUser: watches and logs -f flush, exec upgrades
// (WebSocket and SPDY) carry the impersonation.
func TestStreamingAsEntraUser(t *testing.T) {
	group := unique("grp-editors")
	tok := mint(t, user("ivy@contoso.example", group))
	target := func(t *testing.T, ctx context.Context) checks.Target {
		ns := env.Namespace(t, ctx)
		bind(t, ctx, ns, "Group", group, adminRole)
		createPod(t, ctx, ns, "pod1")
		return checks.Target{Kubeconfig: kubeconfigFor(t, ctx, tok), Kubelet: env.Kubelet, Namespace: ns, Pod: "pod1", Container: "main"}
	}
	for _, proto := range kubectl.Protocols() {
		t.Run("exec-"+string(proto), func(t *testing.T) {
			t.Parallel()
			ctx := harness.TestContext(t)
			checks.ExecStdinRoundTrip(t, ctx, target(t, ctx), proto)
		})
	}
	t.Run("logs-follow", func(t *testing.T) {
		t.Parallel()
		ctx := harness.TestContext(t)
		checks.LogsFollow(t, ctx, target(t, ctx))
	})
	t.Run("watch", func(t *testing.T) {
		t.Parallel()
		ctx := harness.TestContext(t)
		tg := target(t, ctx)
		w, err := kubectl.Start(ctx, tg.Kubeconfig, nil, "get", "configmaps", "-n", tg.Namespace, "-w", "-o", "name")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		cs, _ := env.Cluster.Clientset()
		for i := range 3 {
			name := fmt.Sprintf("cm-%d", i)
			if _, err := cs.CoreV1().ConfigMaps(tg.Namespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := w.WaitForStdout(ctx, "configmap/"+name); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestAuditLogOneLinePerRequestWithoutTokens(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	group := unique("grp-audit")
	bind(t, ctx, ns, "Group", group, viewRole)
	upn := unique("judy") + "@contoso.example"
	tok := mint(t, user(upn, group))
	kubectlOK(t, ctx, kubeconfigFor(t, ctx, tok), "get", "pods", "-n", ns)
	logs := proxyLog(t)
	re := regexp.MustCompile(`msg=request mode=impersonate user=` + regexp.QuoteMeta(upn) + ` groups=1 verb=list path=/api/v1/namespaces/` + ns + `/pods status=200 latency=\S+`)
	if !re.MatchString(logs) {
		t.Errorf("no audit line for the request matching %s", re)
	}
	sig := tok[strings.LastIndex(tok, ".")+1:]
	for _, secret := range []string{tok, sig, shared.saToken} {
		if strings.Contains(logs, secret) {
			t.Fatal("the proxy log contains a token")
		}
	}
}

func TestMetricsEndpoint(t *testing.T) {
	ctx := harness.TestContext(t)
	m := metrics(t, ctx)
	for _, name := range []string{"aadproxy_requests_total", "aadproxy_authn_failures_total", "aadproxy_token_verify_seconds_bucket", "aadproxy_jwks_refreshes_total", "aadproxy_impersonation_attempts_total"} {
		if !strings.Contains(m, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func proxyLog(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(shared.proxy.Log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func metrics(t *testing.T, ctx context.Context) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, shared.proxy.HealthURL+"/metrics", nil)
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue returns the value of the sample named exactly series, or -1.
func metricValue(metrics, series string) float64 {
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// TestExecPluginDeviceCodeLogin: a kubeconfig whose user is `connectctl
// get-token` (device-code login, approved by the issuer as the signed-in
// user) works through the chain, and the second kubectl reuses the cached
// token.
func TestExecPluginDeviceCodeLogin(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	bind(t, ctx, ns, "Group", "grp-device-users", viewRole)
	// Entra mode at the relay: the group needs the connect action there too.
	if _, err := shared.relay.Connectctl(ctx, "role", "assign", "--assignee", "grp-device-users", "--assignee-type", "Group",
		"--role", "Cluster User", "--cluster", clusterName); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(shared.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		ai.Token = ""
		ai.Exec = &clientcmdapi.ExecConfig{
			APIVersion: "client.authentication.k8s.io/v1",
			Command:    env.Binary("connectctl"),
			Args: []string{"get-token", "--issuer-url", shared.issuer.V2Issuer(tenant), "--client-id", cliClientID,
				"--scope", appIDURI + "/.default", "--issuer-ca-file", shared.issuer.CAFile, "--cache-dir", t.TempDir()},
			InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
		}
	}
	kc := filepath.Join(t.TempDir(), "exec.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kc); err != nil {
		t.Fatal(err)
	}
	logins := shared.issuer.Stats().DeviceAuthorizations
	kubectlOK(t, ctx, kc, "get", "pods", "-n", ns)
	ui := whoami(t, ctx, kc)
	if ui.Username != "dana@contoso.example" || !slices.Contains(ui.Groups, "grp-device-users") {
		t.Errorf("whoami through the exec plugin: %+v", ui)
	}
	if n := shared.issuer.Stats().DeviceAuthorizations - logins; n != 1 {
		t.Errorf("%d device-code logins for two kubectl runs, want 1 (cached)", n)
	}
}
