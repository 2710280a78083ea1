// Package aad runs kube-aad-proxy on the hot path as real processes:
// kubectl → relay → tunnel → clusterconnect agent → kube-aad-proxy →
// kube-apiserver, with a local Entra-shaped OIDC issuer (test/oidc)
// minting the users' tokens and answering Graph calls. The apiserver
// authorizes with Node, RBAC and then guard's SubjectAccessReview webhook
// (the structured --authorization-config `guard config` writes, failure
// policy NoOpinion); guard asks the relay's checkAccess with the
// certificate the agent enrolled for. RBAC bindings allow before guard is
// asked, so the RBAC-only tests are unaffected by it; a user with neither
// a binding nor a role assignment is still refused with 403.
package aad

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/oidc"
)

const (
	nodeName    = "aad-node"
	clusterName = "aad"
	tenant      = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	otherTenant = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
	clientID    = "6dae42f8-4368-4678-94ff-3960e28e3630" // the server app
	appIDURI    = "api://clusterconnect-server"
	graphApp    = "kube-aad-proxy-graph"
	graphSecret = "graph-app-secret"
	cliClientID = "connectctl-cli" // the public client of the device-code login

	// Short cache TTLs, so that a new role assignment is seen quickly:
	// guard keeps decisions this long, the apiserver a second.
	guardAllowedTTL = 2 * time.Second
	guardDeniedTTL  = 2 * time.Second
)

// env is the shared environment: one apiserver and one test kubelet.
var env *harness.Env

// shared is what every test uses besides.
var shared struct {
	issuer     *harness.Issuer
	proxy      *harness.Proxy // the agent's upstream
	relay      *harness.Relay
	guard      *harness.Guard // the apiserver's
	saToken    string         // cluster-admin service-account token (pass-through)
	kubeconfig string         // relay-issued, with saToken
}

func TestMain(m *testing.M) { harness.Main(m, "e2e/aad", setup) }

func setup(ctx context.Context, e *harness.Env) (err error) {
	env = e
	if shared.issuer, err = env.StartIssuer(&oidc.Options{Clients: map[string]string{graphApp: graphSecret}, DeviceVersion: 1,
		AutoApprove: &oidc.User{Tenant: tenant, UPN: "dana@contoso.example", OID: "oid-dana", Groups: []string{"grp-device-users"}}}); err != nil {
		return err
	}
	// guard's address and serving certificate come first: the apiserver
	// is started with the webhook configuration pointing at them.
	g, err := env.NewGuard(harness.GuardOptions{Issuer: shared.issuer, Tenant: tenant, Audiences: []string{clientID, appIDURI},
		AllowedTTL: guardAllowedTTL, DeniedTTL: guardDeniedTTL})
	if err != nil {
		return err
	}
	shared.guard = g
	guardFlags, err := g.APIServerFlags(ctx, filepath.Join(env.Dir, "apiserver"), "NoOpinion")
	if err != nil {
		return err
	}
	if err := env.StartCluster(ctx, &cluster.Options{ExtraAPIServerArgs: guardFlags}); err != nil {
		return err
	}
	if err := env.StartKubelet(ctx, nodeName); err != nil {
		return err
	}
	if shared.saToken, err = env.Cluster.ServiceAccountToken(ctx, "kube-system", "e2e-admin", true); err != nil {
		return fmt.Errorf("service account token: %w", err)
	}
	if err := createTestRoles(ctx); err != nil {
		return err
	}
	if shared.proxy, err = env.StartProxy(ctx, harness.ProxyOptions{Issuer: shared.issuer, Tenant: tenant, Audiences: []string{clientID, appIDURI},
		GraphClientID: graphApp, GraphClientSecret: graphSecret}); err != nil {
		return err
	}
	// The relay verifies Entra tokens too (Entra mode at the front door).
	relayArgs := append(shared.issuer.VerifierArgs(tenant, []string{clientID, appIDURI}), "--jwks-min-refresh-interval", "5s")
	if shared.relay, err = env.StartRelay(ctx, &harness.RelayOptions{ExtraArgs: relayArgs}); err != nil {
		return err
	}
	// The agent's "kube" upstream is kube-aad-proxy; it keeps its identity
	// Secret in agent-<name>, talking to the apiserver directly for that.
	a, err := shared.relay.ConnectCluster(ctx, harness.AgentOptions{Cluster: clusterName, Tunnels: 2,
		Upstream: shared.proxy.URL, UpstreamCAFile: shared.proxy.CAFile})
	if err != nil {
		return fmt.Errorf("connect cluster: %w", err)
	}
	// The whole chain answers: relay, tunnel, agent, kube-aad-proxy, apiserver.
	if err := shared.relay.WaitReachable(ctx, clusterName, shared.saToken); err != nil {
		return err
	}
	if shared.kubeconfig, err = shared.relay.Kubeconfig(ctx, clusterName, shared.saToken); err != nil {
		return err
	}
	// guard talks to the relay as the cluster, with the identity the
	// agent enrolled for.
	id, err := env.WaitIdentity(ctx, a, "agent-"+clusterName, filepath.Join(env.Dir, "identity"))
	if err != nil {
		return err
	}
	return g.Start(ctx, shared.relay, id)
}

// The built-in view/edit/admin ClusterRoles are aggregated by the
// controller-manager, which the test cluster does not run: the tests bind
// these instead.
const (
	viewRole  = "aad-e2e-view"
	adminRole = "aad-e2e-admin"
)

var testRoles = map[string][]rbacv1.PolicyRule{
	viewRole: {
		{APIGroups: []string{""}, Resources: []string{"pods", "pods/log", "configmaps"}, Verbs: []string{"get", "list", "watch"}},
	},
	adminRole: {
		{APIGroups: []string{""}, Resources: []string{"pods", "pods/log", "configmaps"}, Verbs: []string{"*"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec", "pods/attach", "pods/portforward"}, Verbs: []string{"get", "create"}},
	},
}

func createTestRoles(ctx context.Context) error {
	cs, err := env.Cluster.Clientset()
	if err != nil {
		return err
	}
	for name, rules := range testRoles {
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("ClusterRole %s: %w", name, err)
		}
	}
	return nil
}
