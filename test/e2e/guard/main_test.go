// Package guard runs guard as a real process behind a real kube-apiserver:
// the apiserver authenticates Entra-shaped tokens (test/oidc) with guard's
// TokenReview webhook and authorizes with Node, RBAC and then guard's
// SubjectAccessReview webhook (a structured --authorization-config written
// by `guard config`); guard asks a real relay's checkAccess with the
// cluster certificate a real clusteragent enrolled for. kubectl talks to
// the apiserver directly (the relay → agent → kube-aad-proxy path is
// covered by test/e2e/aad). Role assignments are made with the relay's
// management API and connectctl.
package guard

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/harness"
)

const (
	clusterName = "guard-e2e"
	tenant      = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	clientID    = "6dae42f8-4368-4678-94ff-3960e28e3630" // the server app
	agentNS     = "clusterconnect"

	// Short TTLs, so that revocation is seen quickly: guard keeps allows
	// for guardAllowedTTL, the apiserver for a second.
	guardAllowedTTL = 6 * time.Second
	guardDeniedTTL  = time.Second
)

// env is the shared environment: one apiserver.
var env *harness.Env

// shared is what every test uses besides.
var shared struct {
	issuer    *harness.Issuer
	relay     *harness.Relay
	guard     *harness.Guard // the apiserver's, --relay-failure-mode=deny
	guardNoOp *harness.Guard // not wired to the apiserver, --relay-failure-mode=no-opinion
}

func TestMain(m *testing.M) { harness.Main(m, "e2e/guard", setup) }

func setup(ctx context.Context, e *harness.Env) (err error) {
	env = e
	if shared.issuer, err = env.StartIssuer(nil); err != nil {
		return err
	}
	if shared.relay, err = env.StartRelay(ctx, nil); err != nil {
		return err
	}
	// guard's address and serving certificate come first: the apiserver
	// is started with the webhook configuration pointing at them.
	if shared.guard, err = newGuard("deny"); err != nil {
		return err
	}
	apiFlags, err := shared.guard.APIServerFlags(ctx, filepath.Join(env.Dir, "apiserver"), "Deny")
	if err != nil {
		return err
	}
	if err := env.StartCluster(ctx, &cluster.Options{
		ExtraAPIServerArgs: append(apiFlags, "--authentication-token-webhook-cache-ttl=5s")}); err != nil {
		return err
	}
	// An agent with only the sync role (no tunnels are needed here): its
	// identity role enrols and keeps the cluster certificate in the
	// Secret guard's files come from.
	a, err := shared.relay.ConnectCluster(ctx, harness.AgentOptions{Cluster: clusterName, Namespace: agentNS, Roles: "sync"})
	if err != nil {
		return fmt.Errorf("enrol the cluster: %w", err)
	}
	id, err := env.WaitIdentity(ctx, a, agentNS, filepath.Join(env.Dir, "identity"))
	if err != nil {
		return err
	}
	if err := shared.guard.Start(ctx, shared.relay, id); err != nil {
		return err
	}
	if shared.guardNoOp, err = newGuard("no-opinion"); err != nil {
		return err
	}
	return shared.guardNoOp.Start(ctx, shared.relay, id)
}

// newGuard prepares a guard with --relay-failure-mode mode.
func newGuard(mode string) (*harness.Guard, error) {
	return env.NewGuard(harness.GuardOptions{Dir: filepath.Join(env.Dir, "guard-"+mode), Issuer: shared.issuer, Tenant: tenant, Audiences: []string{clientID},
		AllowedTTL: guardAllowedTTL, DeniedTTL: guardDeniedTTL,
		ExtraArgs: []string{"--relay-failure-mode", mode, "--relay-failure-backoff", "500ms", "--skip-authz-group", "grp-breakglass"}})
}
