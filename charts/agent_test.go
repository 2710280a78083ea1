package charts

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/clusterconnect/clusterconnect/aadproxy"
	"github.com/clusterconnect/clusterconnect/clusteragent"
	"github.com/clusterconnect/clusterconnect/guard"
)

const testPEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"

// agentValueSets are the value sets every agent-chart check runs on.
var agentValueSets = map[string][]string{
	"defaults": {},
	"guard":    {"guard.enabled=true"},
	"guard+entra": {"guard.enabled=true", "kubeAadProxy.enabled=true",
		"entra.tenants={72f988bf-86f1-41af-91ab-2d7cd011db47}", "entra.audiences={api://clusterconnect}"},
	"proxy":    {"proxy.httpsProxy=http://proxy.corp:3128", "proxy.noProxy=.corp"},
	"extra-ca": {"proxy.httpsProxy=https://proxy.corp", "proxy.caBundle=" + testPEM, "relay.caBundle=" + testPEM},
	"no-netpol": {"networkPolicy.enabled=false", "connect.pdb.enabled=false", "connect.replicas=1",
		"imagePullSecrets={regcred}", "image.tag=v9.9.9"},
}

// agentValues are the required values plus sets (strvals, as --set).
func agentValues(t testing.TB, sets ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for _, s := range append([]string{"cluster.name=prod-eu", "relay.url=https://relay.example.com"}, sets...) {
		k, v, _ := strings.Cut(s, "=")
		// PEM has commas and newlines: take it literally.
		if strings.Contains(v, "-----BEGIN") {
			if err := strvals.ParseIntoString(k+"="+v, vals); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := strvals.ParseInto(s, vals); err != nil {
			t.Fatalf("--set %s: %v", s, err)
		}
	}
	return vals
}

func renderAgent(t testing.TB, vals map[string]any) []*unstructured.Unstructured {
	t.Helper()
	ch, err := Load(AgentChart)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Render(context.Background(), ch, vals, RenderOptions{ReleaseName: "clusterconnect-agent", Namespace: "agents"})
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return objs
}

func convert[T any](t testing.TB, o *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, &v, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return &v
}

func byKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func TestAgentChartLints(t *testing.T) {
	for name, sets := range agentValueSets {
		t.Run(name, func(t *testing.T) {
			res := lint.RunAll(AgentChart, agentValues(t, sets...), "agents")
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				}
			}
		})
	}
}

// The images each role runs, by the component label.
var roleBinary = map[string]string{
	"identity": "clusteragent", "connect": "clusteragent", "sync": "clusteragent",
	"kube-aad-proxy": "kube-aad-proxy", "guard": "guard",
}

func TestAgentChartWorkloads(t *testing.T) {
	for name, sets := range agentValueSets {
		t.Run(name, func(t *testing.T) {
			vals := agentValues(t, sets...)
			objs := renderAgent(t, vals)
			sas := map[string]*corev1.ServiceAccount{}
			for _, o := range byKind(objs, "ServiceAccount") {
				sas[o.GetName()] = convert[corev1.ServiceAccount](t, o)
			}
			deps := byKind(objs, "Deployment")
			want := []string{"connect", "identity", "sync"}
			if strings.Contains(name, "guard") {
				want = append(want, "guard")
			}
			if strings.Contains(name, "entra") {
				want = append(want, "kube-aad-proxy")
			}
			var got []string
			seenSA := map[string]bool{}
			for _, o := range deps {
				d := convert[appsv1.Deployment](t, o)
				role := d.Labels["app.kubernetes.io/component"]
				got = append(got, role)
				ps := d.Spec.Template.Spec
				if d.Spec.Template.Labels["app.kubernetes.io/part-of"] != "clusterconnect-agent" || d.Labels["app.kubernetes.io/version"] == "" {
					t.Errorf("%s: pods lack the part-of label or the version label the sync role reports", d.Name)
				}
				if sa := sas[ps.ServiceAccountName]; sa == nil || seenSA[ps.ServiceAccountName] {
					t.Errorf("%s: service account %q missing or shared with another role", d.Name, ps.ServiceAccountName)
				}
				seenSA[ps.ServiceAccountName] = true
				if p := ps.SecurityContext; p == nil || p.RunAsNonRoot == nil || !*p.RunAsNonRoot || p.SeccompProfile == nil || p.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: pod security context %+v: want runAsNonRoot and seccomp RuntimeDefault", d.Name, p)
				}
				usesAPI := role == "identity" || role == "sync" || role == "kube-aad-proxy"
				if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken != usesAPI {
					t.Errorf("%s: automountServiceAccountToken %v, want %v (only roles that call the API get a token)", d.Name, ps.AutomountServiceAccountToken, usesAPI)
				}
				if len(ps.Containers) != 1 {
					t.Fatalf("%s: %d containers", d.Name, len(ps.Containers))
				}
				c := ps.Containers[0]
				bin := roleBinary[role]
				if bin == "" || len(c.Command) != 1 || c.Command[0] != "/usr/local/bin/"+bin || !strings.Contains(c.Image, "/"+bin+":") {
					t.Errorf("%s: command %v image %s: want /usr/local/bin/%s from the %s image", d.Name, c.Command, c.Image, bin, bin)
				}
				if strings.Contains(name, "no-netpol") && !strings.HasSuffix(c.Image, ":v9.9.9") {
					t.Errorf("%s: image %s: image.tag not applied", d.Name, c.Image)
				}
				sc := c.SecurityContext
				if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
					sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
					sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: container security context %+v", d.Name, sc)
				}
				if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
					t.Errorf("%s: resources %+v: want requests and limits of cpu and memory", d.Name, c.Resources)
				}
				ports := map[string]bool{}
				for _, p := range c.Ports {
					ports[p.Name] = true
				}
				for what, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
					if p == nil || p.HTTPGet == nil || !ports[p.HTTPGet.Port.String()] || !strings.HasSuffix(p.HTTPGet.Path, "z") {
						t.Errorf("%s: %s probe %+v: want an HTTP probe on a declared health port", d.Name, what, p)
					}
				}
				env := map[string]string{}
				for _, e := range c.Env {
					env[e.Name] = e.Value
				}
				if px, _ := vals["proxy"].(map[string]any); px != nil && px["httpsProxy"] != nil {
					if env["HTTPS_PROXY"] != px["httpsProxy"] || !strings.Contains(env["NO_PROXY"], "$(KUBERNETES_SERVICE_HOST)") || !strings.Contains(env["NO_PROXY"], ".svc") {
						t.Errorf("%s: proxy env %v: want HTTPS_PROXY and a NO_PROXY with the apiserver and the service domain", d.Name, env)
					}
					if px["caBundle"] != nil && env["SSL_CERT_DIR"] == "" {
						t.Errorf("%s: the proxy CA is not trusted (no SSL_CERT_DIR)", d.Name)
					}
				} else if env["HTTPS_PROXY"] != "" {
					t.Errorf("%s: HTTPS_PROXY set without a proxy", d.Name)
				}
				args := strings.Join(c.Args, " ")
				if rl, _ := vals["relay"].(map[string]any); rl["caBundle"] != nil && bin == "clusteragent" && !strings.Contains(args, "--relay-ca-file=") {
					t.Errorf("%s: relay CA bundle not passed: %s", d.Name, args)
				}
				if role == "connect" && !strings.Contains(args, "--identity-dir=") || role == "identity" && !strings.Contains(args, "--registration-token-file=") {
					t.Errorf("%s: args %s", d.Name, args)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("Deployments for roles %v, want %v", got, want)
			}
			pdbs := byKind(objs, "PodDisruptionBudget")
			if wantPDB := !strings.Contains(name, "no-netpol"); (len(pdbs) == 1) != wantPDB {
				t.Errorf("%d PodDisruptionBudgets, want one: %v", len(pdbs), wantPDB)
			}
			if nps := byKind(objs, "NetworkPolicy"); (len(nps) > 0) == strings.Contains(name, "no-netpol") {
				t.Errorf("%d NetworkPolicies", len(nps))
			}
		})
	}
}

// rule is one RBAC rule with where it is granted.
type grant struct {
	kind, name, role string // Role or ClusterRole, its name, the role component
	rule             rbacv1.PolicyRule
}

func grants(t *testing.T, objs []*unstructured.Unstructured) []grant {
	var out []grant
	for _, o := range objs {
		var rules []rbacv1.PolicyRule
		switch o.GetKind() {
		case "Role":
			rules = convert[rbacv1.Role](t, o).Rules
		case "ClusterRole":
			rules = convert[rbacv1.ClusterRole](t, o).Rules
		default:
			continue
		}
		for _, r := range rules {
			out = append(out, grant{o.GetKind(), o.GetName(), o.GetLabels()["app.kubernetes.io/component"], r})
		}
	}
	return out
}

func TestAgentChartRBAC(t *testing.T) {
	objs := renderAgent(t, agentValues(t, agentValueSets["guard+entra"]...))
	gs := grants(t, objs)
	if len(gs) == 0 {
		t.Fatal("no RBAC rules rendered")
	}
	for _, g := range gs {
		has := func(list []string, v string) bool { return slices.Contains(list, v) || slices.Contains(list, "*") }
		if has(g.rule.Resources, "secrets") && (g.kind == "ClusterRole" || g.role != "identity") {
			t.Errorf("%s %s (%s) grants %v on secrets: only the identity role may, in its namespace", g.kind, g.name, g.role, g.rule.Verbs)
		}
		if has(g.rule.Verbs, "impersonate") && g.role != "kube-aad-proxy" {
			t.Errorf("%s %s (%s) may impersonate: only kube-aad-proxy may", g.kind, g.name, g.role)
		}
		if has(g.rule.Verbs, "*") || has(g.rule.Resources, "*") || has(g.rule.APIGroups, "*") {
			t.Errorf("%s %s: wildcard rule %+v", g.kind, g.name, g.rule)
		}
		if g.role == "identity" && has(g.rule.Verbs, "get") && !slices.Equal(g.rule.ResourceNames, []string{"clusterconnect-identity"}) {
			t.Errorf("identity reads Secrets %v: want only its own", g.rule.ResourceNames)
		}
	}
	// Each binding binds its role's own service account, in the release namespace.
	for _, o := range objs {
		if k := o.GetKind(); k != "RoleBinding" && k != "ClusterRoleBinding" {
			continue
		}
		b := convert[rbacv1.RoleBinding](t, o)
		role := b.Labels["app.kubernetes.io/component"]
		if len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != "clusterconnect-agent-"+role || b.Subjects[0].Namespace != "agents" {
			t.Errorf("%s %s binds %+v", o.GetKind(), b.Name, b.Subjects)
		}
	}
}

func TestAgentChartGuardWebhookFiles(t *testing.T) {
	objs := renderAgent(t, agentValues(t, agentValueSets["guard+entra"]...))
	var cfg *corev1.Secret
	for _, o := range byKind(objs, "Secret") {
		if o.GetName() == "clusterconnect-agent-guard-apiserver-config" {
			cfg = convert[corev1.Secret](t, o)
		}
	}
	if cfg == nil {
		t.Fatal("no apiserver webhook config Secret")
	}
	for _, k := range []string{"authn-webhook.kubeconfig", "authz-webhook.kubeconfig"} {
		kc, err := clientcmd.Load([]byte(cfg.StringData[k]))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		cl := kc.Clusters[kc.Contexts[kc.CurrentContext].Cluster]
		if !strings.HasPrefix(cl.Server, "https://clusterconnect-agent-guard.agents.svc:8443/") || len(cl.CertificateAuthorityData) == 0 {
			t.Errorf("%s: server %s", k, cl.Server)
		}
		if u := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo]; u == nil || len(u.ClientCertificateData) == 0 {
			t.Errorf("%s: no client certificate for the apiserver", k)
		}
	}
	if !strings.Contains(cfg.StringData["apiserver-flags"], "--authorization-config=/etc/kubernetes/guard/authorization-config.yaml") {
		t.Errorf("apiserver-flags: %q", cfg.StringData["apiserver-flags"])
	}
}

func TestAgentChartRefusesBadValues(t *testing.T) {
	ch, err := Load(AgentChart)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		sets []string
		want string
	}{
		"negative replicas": {[]string{"connect.replicas=-1"}, "at '/connect/replicas': minimum"},
		"unknown key":       {[]string{"bogus=1"}, "additional properties 'bogus' not allowed"},
		"unknown nested":    {[]string{"connect.tunnel=3"}, "additional properties 'tunnel' not allowed"},
		"two renewers":      {[]string{"identity.replicas=2"}, "at '/identity/replicas': maximum"},
		"http relay":        {[]string{"relay.url=http://relay.example.com"}, "/relay/url"},
		"token as value":    {[]string{"registration.token=abc"}, "additional properties 'token' not allowed"},
		"aad without entra": {[]string{"kubeAadProxy.enabled=true"}, "needs entra.tenants and entra.audiences"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Render(context.Background(), ch, agentValues(t, tc.sets...), RenderOptions{ReleaseName: "a", Namespace: "agents"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := Render(context.Background(), ch, map[string]any{}, RenderOptions{ReleaseName: "a", Namespace: "agents"}); err == nil || !strings.Contains(err.Error(), "is required") {
		t.Errorf("no cluster name and relay: %v", err)
	}
}

// leafKeys lists the dotted paths of values' leaves (lists, empty maps and
// Kubernetes resources blocks are leaves).
func leafKeys(prefix string, v any, out *[]string) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 || strings.HasSuffix(prefix, "resources") {
		*out = append(*out, prefix)
		return
	}
	for k, x := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		leafKeys(p, x, out)
	}
}

// TestAgentChartDocumentsEveryValue: each leaf of values.yaml is in the
// README's table and in the schema.
func TestAgentChartDocumentsEveryValue(t *testing.T) {
	checkDocumented(t, AgentChart)
}

func checkDocumented(t *testing.T, dir string) {
	raw, err := os.ReadFile(filepath.Join(dir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(raw, &vals); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	schemaRaw, err := os.ReadFile(filepath.Join(dir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := yaml.Unmarshal(schemaRaw, &schema); err != nil {
		t.Fatal(err)
	}
	var keys []string
	leafKeys("", vals, &keys)
	for _, k := range keys {
		if !strings.Contains(string(readme), "`"+k+"`") {
			t.Errorf("README.md does not list `%s`", k)
		}
		s := schema
		for _, part := range strings.Split(k, ".") {
			props, _ := s["properties"].(map[string]any)
			s, _ = props[part].(map[string]any)
			if s == nil {
				t.Errorf("values.schema.json does not cover %s", k)
				break
			}
		}
	}
}

// flagged is a binary's options as its main parses them.
type flagged interface {
	Flags(*flag.FlagSet)
	Validate() error
}

// TestAgentChartArgsParse: every container's args parse with its binary's
// own flag set and pass its Validate, for every value set (a flag the
// binary lacks, or a value it refuses, fails here rather than in a pod).
func TestAgentChartArgsParse(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	t.Setenv("POD_NAMESPACE", "agents")
	for name, sets := range agentValueSets {
		t.Run(name, func(t *testing.T) {
			for _, o := range byKind(renderAgent(t, agentValues(t, sets...)), "Deployment") {
				d := convert[appsv1.Deployment](t, o)
				c := d.Spec.Template.Spec.Containers[0]
				var opts flagged
				switch bin := filepath.Base(c.Command[0]); bin {
				case "clusteragent":
					opts = clusteragent.NewOptions()
				case "kube-aad-proxy":
					opts = aadproxy.NewOptions()
				case "guard":
					opts = guard.NewOptions()
				default:
					t.Fatalf("%s: unknown binary %s", d.Name, bin)
				}
				fs := flag.NewFlagSet(d.Name, flag.ContinueOnError)
				fs.SetOutput(io.Discard)
				opts.Flags(fs)
				if err := fs.Parse(c.Args); err != nil {
					t.Errorf("%s: %v (args %v)", d.Name, err, c.Args)
					continue
				}
				if fs.NArg() != 0 {
					t.Errorf("%s: stray arguments %v", d.Name, fs.Args())
				}
				if err := opts.Validate(); err != nil {
					t.Errorf("%s: %v (args %v)", d.Name, err, c.Args)
				}
			}
		})
	}
}

func TestAgentChartGuardAtAFixedIP(t *testing.T) {
	objs := renderAgent(t, agentValues(t, "guard.enabled=true", "guard.clusterIP=10.96.0.53"))
	for _, o := range byKind(objs, "Secret") {
		if o.GetName() != "clusterconnect-agent-guard-apiserver-config" {
			continue
		}
		s := convert[corev1.Secret](t, o)
		kc, err := clientcmd.Load([]byte(s.StringData["authz-webhook.kubeconfig"]))
		if err != nil {
			t.Fatal(err)
		}
		if srv := kc.Clusters["guard"].Server; srv != "https://10.96.0.53:8443/subjectaccessreviews" {
			t.Errorf("server %s, want the fixed IP", srv)
		}
	}
	for _, o := range byKind(objs, "Service") {
		if o.GetName() == "clusterconnect-agent-guard" && convert[corev1.Service](t, o).Spec.ClusterIP != "10.96.0.53" {
			t.Errorf("guard Service without the fixed ClusterIP")
		}
	}
}
