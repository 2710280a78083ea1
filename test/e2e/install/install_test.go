package install

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/strvals"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/clusterconnect/clusterconnect/charts"
	"github.com/clusterconnect/clusterconnect/test/harness"
)

const testPEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"

type clients struct {
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newClients(t *testing.T) *clients {
	t.Helper()
	rc := env.Cluster.RESTConfig()
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return &clients{kube: cs, dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))}
}

func values(t *testing.T, sets ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for _, s := range sets {
		parse := strvals.ParseInto
		if strings.Contains(s, "-----BEGIN") {
			parse = strvals.ParseIntoString
		}
		if err := parse(s, vals); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return vals
}

// TestRenderedManifestsPassServerDryRun applies every object of both charts,
// for several value sets, to the real apiserver with dryRun=All: the API's
// own schema, defaulting and validation judge them. Kinds the apiserver does
// not serve (ServiceMonitor, Gateway API routes: CRDs not installed here)
// are named in the log and skipped.
func TestRenderedManifestsPassServerDryRun(t *testing.T) {
	ctx := harness.TestContext(t)
	c := newClients(t)
	ns := env.Namespace(t, ctx)
	agentBase := []string{"cluster.name=dry-run", "relay.url=https://relay.example.com:8443"}
	relayEtcd := []string{"store.type=etcd", "replicas=3", "store.etcd.endpoints={https://etcd-0:2379,https://etcd-1:2379}",
		"store.etcd.clientSecretName=relay-etcd", "kek.secretName=relay-kek", "tls.secretName=relay-tls", "adminToken.secretName=relay-admin"}
	sets := []struct {
		chart string
		sets  []string
	}{
		{charts.AgentChart, agentBase},
		{charts.AgentChart, append(agentBase, "guard.enabled=true")},
		{charts.AgentChart, append(agentBase, "guard.enabled=true", "kubeAadProxy.enabled=true", "entra.tenants={t-1}", "entra.audiences={api://cc}",
			"kubeAadProxy.graph.clientID=app", "kubeAadProxy.graph.clientSecretName=graph", "entra.issuerCABundle="+testPEM)},
		{charts.AgentChart, append(agentBase, "proxy.httpsProxy=http://proxy.corp:3128", "proxy.noProxy=.corp", "proxy.caBundle="+testPEM, "relay.caBundle="+testPEM)},
		{charts.AgentChart, append(agentBase, "networkPolicy.apiServerCIDRs={10.0.0.1/32}", "networkPolicy.relayCIDRs={203.0.113.0/24}")},
		{charts.RelayChart, nil},
		{charts.RelayChart, relayEtcd},
		{charts.RelayChart, append(relayEtcd, "ingress.enabled=true", "ingress.hosts={relay.example.com}", "serviceMonitor.enabled=true",
			"gateway.tlsRoute.enabled=true", "gateway.tlsRoute.hostnames={relay.example.com}", "gateway.tlsRoute.parentRefs[0].name=gw")},
	}
	for i, tc := range sets {
		t.Run(fmt.Sprintf("%s-%d", tc.chart, i), func(t *testing.T) {
			ch, err := charts.Load(tc.chart)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := charts.Render(ctx, ch, values(t, tc.sets...), charts.RenderOptions{ReleaseName: "dry", Namespace: ns, KubeVersion: "v1.37.0",
				APIVersions: []string{"monitoring.coreos.com/v1", "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha2"}})
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			applied := 0
			for _, o := range objs {
				gvk := o.GroupVersionKind()
				m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
				if meta.IsNoMatchError(err) {
					t.Logf("%s %s: not served by this apiserver (no CRD); skipped", gvk.Kind, o.GetName())
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				ri := c.dyn.Resource(m.Resource)
				var res dynamic.ResourceInterface = ri
				if m.Scope.Name() == meta.RESTScopeNameNamespace {
					res = ri.Namespace(ns)
				}
				if _, err := res.Create(ctx, o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}); err != nil {
					t.Errorf("%s %s: the apiserver refuses it: %v", gvk.Kind, o.GetName(), err)
					continue
				}
				applied++
			}
			if applied == 0 {
				t.Fatal("nothing applied")
			}
		})
	}
}

// connectctl runs the built connectctl with the relay's admin login.
func connectctl(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	return relay.Connectctl(ctx, args...)
}

func mustConnectctl(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := connectctl(t, ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("connectctl %s:\n%s", strings.Join(args, " "), out)
	return out
}

// ownKinds are the namespaced kinds the agent chart renders.
var ownKinds = []struct{ group, version, resource string }{
	{"apps", "v1", "deployments"}, {"", "v1", "serviceaccounts"}, {"", "v1", "secrets"}, {"", "v1", "configmaps"},
	{"", "v1", "services"}, {"rbac.authorization.k8s.io", "v1", "roles"}, {"rbac.authorization.k8s.io", "v1", "rolebindings"},
	{"networking.k8s.io", "v1", "networkpolicies"}, {"policy", "v1", "poddisruptionbudgets"},
}

func TestConnectUpgradeDisconnect(t *testing.T) {
	ctx := harness.TestContext(t)
	c := newClients(t)
	const name = "installed"
	ns := "agents-installed"
	kc := env.Cluster.AdminKubeconfig
	caPEM, err := os.ReadFile(relay.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	out := mustConnectctl(t, ctx, "connect", name, "--kubeconfig", kc, "--namespace", ns, "--enable-guard", "--set", "connect.replicas=3",
		"--proxy-url", "http://proxy.corp:3128")
	for _, want := range []string{"registered cluster " + name, "created namespace " + ns, "installed release clusterconnect-agent", "objects exist", "Cluster " + name + ": Connecting"} {
		if !strings.Contains(out, want) {
			t.Errorf("connect output lacks %q", want)
		}
	}
	// Every role's Deployment, its own ServiceAccount, the RBAC, the PDB,
	// the NetworkPolicies and guard's files exist, with the values given.
	deps, err := c.kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=clusterconnect-agent"})
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, d := range deps.Items {
		role := d.Labels["app.kubernetes.io/component"]
		ctr := d.Spec.Template.Spec.Containers[0]
		roles[role] = ctr.Image
		if role == "connect" && *d.Spec.Replicas != 3 {
			t.Errorf("connect replicas %d, want 3 (--set)", *d.Spec.Replicas)
		}
		if !strings.Contains(strings.Join(ctr.Args, " "), "--relay-url="+relay.URL) {
			t.Errorf("%s: args %v lack the relay URL", d.Name, ctr.Args)
		}
		var proxy string
		for _, e := range ctr.Env {
			if e.Name == "HTTPS_PROXY" {
				proxy = e.Value
			}
		}
		if proxy != "http://proxy.corp:3128" {
			t.Errorf("%s: HTTPS_PROXY %q", d.Name, proxy)
		}
	}
	for _, r := range []string{"identity", "connect", "sync", "guard"} {
		if roles[r] == "" {
			t.Errorf("no Deployment for role %s (have %v)", r, roles)
		}
	}
	reg, err := c.kube.CoreV1().Secrets(ns).Get(ctx, "clusterconnect-registration", metav1.GetOptions{})
	if err != nil || len(strings.TrimSpace(string(reg.Data["token"]))) < 10 {
		t.Fatalf("registration Secret: %v %v", err, reg)
	}
	cm, err := c.kube.CoreV1().ConfigMaps(ns).Get(ctx, "clusterconnect-agent-relay-ca", metav1.GetOptions{})
	if err != nil || cm.Data["ca.crt"] != string(caPEM) {
		t.Errorf("relay CA ConfigMap: %v (want the relay CA connectctl trusts)", err)
	}
	for _, n := range []string{"clusterconnect-agent-guard-apiserver-config", "clusterconnect-agent-guard-tls"} {
		if _, err := c.kube.CoreV1().Secrets(ns).Get(ctx, n, metav1.GetOptions{}); err != nil {
			t.Errorf("guard Secret %s: %v", n, err)
		}
	}
	for _, n := range []string{"clusterconnect-agent-connect"} {
		if _, err := c.kube.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, n, metav1.GetOptions{}); err != nil {
			t.Errorf("PDB %s: %v", n, err)
		}
	}
	crs, err := c.kube.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{LabelSelector: "clusterconnect.io/cluster=" + name})
	if err != nil || len(crs.Items) == 0 {
		t.Fatalf("ClusterRoles of the release: %v, %d", err, len(crs.Items))
	}
	if _, err := relay.Connectctl(ctx, "show", name); err != nil {
		t.Fatal(err)
	}

	// The registration token is not in the release's values.
	if rel := helmValues(t, ctx, c, ns); !strings.Contains(rel, `"cluster"`) || strings.Contains(rel, strings.TrimSpace(string(reg.Data["token"]))) {
		t.Error("the registration token is in the release")
	}

	// A second run upgrades and keeps the values; the agents have not
	// enrolled (no pod runs here), so the token is replaced.
	out = mustConnectctl(t, ctx, "connect", name, "--kubeconfig", kc, "--namespace", ns, "--enable-guard")
	if !strings.Contains(out, "upgraded release clusterconnect-agent") || !strings.Contains(out, "revision 2") || !strings.Contains(out, "issued a new registration token") {
		t.Errorf("second connect did not upgrade in place with a fresh token:\n%s", out)
	}
	// upgrade changes the image tag and keeps the rest.
	mustConnectctl(t, ctx, "upgrade", name, "--kubeconfig", kc, "--namespace", ns, "--set", "image.tag=v0.2.0-e2e")
	deps, err = c.kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=clusterconnect-agent"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		if img := d.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, ":v0.2.0-e2e") {
			t.Errorf("%s: image %s after upgrade", d.Name, img)
		}
		if d.Labels["app.kubernetes.io/version"] != "v0.2.0-e2e" {
			t.Errorf("%s: version label %q", d.Name, d.Labels["app.kubernetes.io/version"])
		}
		if d.Labels["app.kubernetes.io/component"] == "connect" && *d.Spec.Replicas != 3 {
			t.Errorf("upgrade lost connect.replicas: %d", *d.Spec.Replicas)
		}
	}

	// The sync role reports every role's health, read from the Deployments
	// the chart made: a real clusteragent (identity and sync) enrols with
	// the token connectctl put in the Secret, in the chart's namespace.
	if reg, err = c.kube.CoreV1().Secrets(ns).Get(ctx, "clusterconnect-registration", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, reg.Data["token"], 0o600); err != nil {
		t.Fatal(err)
	}
	agent, err := env.StartAgent(ctx, relay, harness.AgentOptions{Cluster: name, Namespace: ns, TokenFile: tokFile, Roles: "sync", HeartbeatInterval: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Stop()
	if err := harness.WaitLog(ctx, agent, "heartbeat sent"); err != nil {
		t.Fatal(agent.WithLog(err))
	}
	show := waitShow(t, ctx, name, "v0.2.0-e2e")
	for _, want := range []string{"Agents:", "connect", "0/3", "guard", "identity", "sync"} {
		if !strings.Contains(show, want) {
			t.Errorf("show lacks %q:\n%s", want, show)
		}
	}

	// The connect role as the chart runs it: no Kubernetes API access, the
	// identity read from the mounted identity Secret (here: its files).
	idSecret, err := c.kube.CoreV1().Secrets(ns).Get(ctx, harness.IdentitySecret, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the identity role did not write its Secret: %v", err)
	}
	idDir := t.TempDir()
	for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if err := os.WriteFile(filepath.Join(idDir, k), idSecret.Data[k], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := env.StartAgent(ctx, relay, harness.AgentOptions{Cluster: name, Namespace: ns, TokenFile: tokFile, Roles: "connect", Tunnels: 2,
		ExtraArgs: []string{"--identity-dir", idDir, "--registration-token-file=", "--kubeconfig=/nonexistent", "--listen", "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Stop()
	if err := relay.WaitTunnels(ctx, name, 2); err != nil {
		t.Fatal(conn.WithLog(err))
	}
	conn.Stop()
	agent.Stop()

	// Enrolled now: another connect keeps the identity, issues no token.
	if out := mustConnectctl(t, ctx, "connect", name, "--kubeconfig", kc, "--namespace", ns); !strings.Contains(out, "enrolled") || strings.Contains(out, "new registration token") {
		t.Errorf("connect after enrolment:\n%s", out)
	}

	// disconnect leaves nothing behind: no namespaced object of the chart
	// (nor the identity Secret the agent wrote), no ClusterRole or binding,
	// and the cluster is gone from the relay.
	out = mustConnectctl(t, ctx, "disconnect", name, "--kubeconfig", kc, "--namespace", ns)
	if !strings.Contains(out, "deleted cluster "+name) {
		t.Errorf("disconnect output:\n%s", out)
	}
	for _, k := range ownKinds {
		list, err := c.dyn.Resource(gvr(k.group, k.version, k.resource)).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range list.Items {
			if k.resource == "serviceaccounts" && o.GetName() == "default" || k.resource == "configmaps" && o.GetName() == "kube-root-ca.crt" {
				continue // made by the apiserver's controllers, not the chart
			}
			t.Errorf("left behind: %s %s/%s", k.resource, ns, o.GetName())
		}
	}
	for _, res := range []string{"clusterroles", "clusterrolebindings"} {
		list, err := c.dyn.Resource(gvr("rbac.authorization.k8s.io", "v1", res)).List(ctx, metav1.ListOptions{LabelSelector: "clusterconnect.io/cluster=" + name})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range list.Items {
			t.Errorf("left behind: %s %s", res, o.GetName())
		}
	}
	for _, res := range []string{"validatingwebhookconfigurations", "mutatingwebhookconfigurations"} {
		list, err := c.dyn.Resource(gvr("admissionregistration.k8s.io", "v1", res)).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 0 {
			t.Errorf("%d %s exist", len(list.Items), res)
		}
	}
	// No controller-manager runs here, so the deleted namespace stays
	// Terminating; on a real cluster it goes.
	switch n, err := c.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); {
	case apierrors.IsNotFound(err):
	case err != nil:
		t.Fatal(err)
	case n.DeletionTimestamp == nil:
		t.Errorf("namespace %s (created by connectctl) not deleted", ns)
	}
	if out, err := connectctl(t, ctx, "show", name); err == nil || !strings.Contains(out, "404") {
		t.Errorf("cluster still at the relay after disconnect: %v\n%s", err, out)
	}
}

func gvr(g, v, r string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: g, Version: v, Resource: r}
}

// waitShow polls `connectctl show` until it reports the role health with
// version.
func waitShow(t *testing.T, ctx context.Context, name, version string) string {
	t.Helper()
	var last string
	for ctx.Err() == nil {
		out, err := connectctl(t, ctx, "show", name)
		if err == nil && strings.Contains(out, "Agents:") && strings.Contains(out, version) {
			return out
		}
		last = out
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("show never listed the roles:\n%s", last)
	return ""
}

// helmValues is the content of every release record of the namespace
// (Helm keeps each, gzipped JSON in base64, in a Secret).
func helmValues(t *testing.T, ctx context.Context, c *clients, ns string) string {
	t.Helper()
	list, err := c.kube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"})
	if err != nil || len(list.Items) == 0 {
		t.Fatalf("helm release Secrets: %v (%d)", err, len(list.Items))
	}
	var b strings.Builder
	for _, s := range list.Items {
		rel, err := decodeRelease(s.Data["release"])
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(rel)
	}
	return b.String()
}

func TestConnectRefusesBadValuesBeforeCreatingAnything(t *testing.T) {
	ctx := harness.TestContext(t)
	c := newClients(t)
	for _, tc := range []struct{ set, want string }{
		{"connect.replicas=-1", "at '/connect/replicas': minimum: got -1, want 0"},
		{"bogus=1", "additional properties 'bogus' not allowed"},
	} {
		ns := "refused-" + strings.ReplaceAll(strings.Split(tc.set, "=")[0], ".", "-")
		out, err := connectctl(t, ctx, "connect", "refused", "--kubeconfig", env.Cluster.AdminKubeconfig, "--namespace", ns, "--set", tc.set)
		if err == nil || !strings.Contains(out, tc.want) || !strings.Contains(out, "nothing was changed") {
			t.Errorf("--set %s: %v\n%s\nwant the schema's message %q", tc.set, err, out, tc.want)
		}
		if _, err := c.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("--set %s: namespace %s exists (err %v)", tc.set, ns, err)
		}
	}
	if out, err := connectctl(t, ctx, "show", "refused"); err == nil || !strings.Contains(out, "404") {
		t.Errorf("the refused cluster was registered at the relay: %v\n%s", err, out)
	}
}

func TestConnectSaysWhichPermissionIsMissing(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	// A user who may do nothing but what every authenticated user may.
	tok, err := env.Cluster.ServiceAccountToken(ctx, ns, "nobody", false)
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(t.TempDir(), "nobody.kubeconfig")
	if err := env.Cluster.WriteKubeconfig(kc, tok); err != nil {
		t.Fatal(err)
	}
	out, err := connectctl(t, ctx, "connect", "unprivileged", "--kubeconfig", kc, "--namespace", "agents-unprivileged")
	for _, want := range []string{"may not create", "namespaces (cluster-wide)", "clusterroles.rbac.authorization.k8s.io", "cluster admin's kubeconfig"} {
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("connect with a powerless kubeconfig: %v, output lacks %q:\n%s", err, want, out)
		}
	}
	if out, err := connectctl(t, ctx, "show", "unprivileged"); err == nil || !strings.Contains(out, "404") {
		t.Errorf("registered although the install could not go on: %v\n%s", err, out)
	}
	// An apiserver that does not answer.
	bad := filepath.Join(t.TempDir(), "dead.kubeconfig")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Config\nclusters: [{name: d, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: d, user: {token: x}}]\ncontexts: [{name: d, context: {cluster: d, user: d}}]\ncurrent-context: d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = connectctl(t, ctx, "connect", "unreachable", "--kubeconfig", bad)
	if err == nil || !strings.Contains(out, "cannot reach the apiserver at https://127.0.0.1:1") {
		t.Errorf("dead apiserver: %v\n%s", err, out)
	}
}

// decodeRelease undoes the release Secret's encoding: base64 of gzip of
// JSON.
func decodeRelease(data []byte) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(string(data))
	if err != nil {
		return "", fmt.Errorf("release record: %w", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("release record: %w", err)
	}
	b, err := io.ReadAll(zr)
	return string(b), err
}

// TestDisconnectWithoutAgentsChangesNothing: a disconnect aimed at a
// namespace without the cluster's release (a wrong --namespace) deletes
// nothing, neither there nor at the relay.
func TestDisconnectWithoutAgentsChangesNothing(t *testing.T) {
	ctx := harness.TestContext(t)
	c := newClients(t)
	ns := env.Namespace(t, ctx)
	mustConnectctl(t, ctx, "clusters", "create", "lonely", "--token-file", filepath.Join(t.TempDir(), "tok"))
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "clusterconnect-registration", Namespace: ns}, StringData: map[string]string{"token": "someone else's"}}
	if _, err := c.kube.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := connectctl(t, ctx, "disconnect", "lonely", "--kubeconfig", env.Cluster.AdminKubeconfig, "--namespace", ns)
	if err == nil || !strings.Contains(out, "nothing was changed") {
		t.Fatalf("disconnect without a release: %v\n%s", err, out)
	}
	if _, err := c.kube.CoreV1().Secrets(ns).Get(ctx, s.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("a Secret connectctl did not make was deleted: %v", err)
	}
	if _, err := connectctl(t, ctx, "show", "lonely"); err != nil {
		t.Errorf("the cluster was deleted at the relay: %v", err)
	}
}
