// Package install installs the charts into a real kube-apiserver: every
// rendered manifest of both charts is applied with server-side dry-run
// (schema-checked by the real API), and the real connectctl connects,
// upgrades and disconnects clusters with the Helm SDK against the apiserver
// and a real relay. No controller-manager or container runtime runs here:
// the tests check the objects and their specs, not pods.
package install

import (
	"context"
	"testing"

	"github.com/clusterconnect/clusterconnect/test/harness"
)

// env is the shared environment: one apiserver, one relay.
var env *harness.Env

var relay *harness.Relay

func TestMain(m *testing.M) { harness.Main(m, "e2e/install", setup) }

func setup(ctx context.Context, e *harness.Env) (err error) {
	env = e
	if err := env.StartCluster(ctx, nil); err != nil {
		return err
	}
	relay, err = env.StartRelay(ctx, nil)
	return err
}
