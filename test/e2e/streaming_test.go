package e2e

import (
	"context"
	"testing"

	"github.com/clusterconnect/clusterconnect/test/checks"
	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
	"github.com/clusterconnect/clusterconnect/test/kubelet"
)

// The upgrade paths (exec, attach, port-forward, cp) and streamed logs, over
// both protocols kubectl speaks, through relay → tunnel → agent → apiserver →
// test kubelet: the same checks test/kubelet runs straight at the apiserver.

func viaRelay(t *testing.T, ctx context.Context) checks.Target {
	t.Helper()
	ns := env.Namespace(t, ctx)
	cs, err := env.Cluster.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	if err := kubelet.RunPod(ctx, cs, ns, "pod1", nodeName, "main"); err != nil {
		t.Fatal(err)
	}
	return checks.Target{Kubeconfig: shared.kubeconfig, Kubelet: env.Kubelet, Namespace: ns, Pod: "pod1", Container: "main"}
}

func forEachProtocol(t *testing.T, f func(t *testing.T, ctx context.Context, tg checks.Target, proto kubectl.Protocol)) {
	for _, proto := range kubectl.Protocols() {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			ctx := harness.TestContext(t)
			f(t, ctx, viaRelay(t, ctx), proto)
		})
	}
}

func TestExecStdin(t *testing.T)        { forEachProtocol(t, checks.ExecStdinRoundTrip) }
func TestExecExitCode(t *testing.T)     { forEachProtocol(t, checks.ExecExitCode) }
func TestExecStdoutStderr(t *testing.T) { forEachProtocol(t, checks.ExecStdoutStderr) }
func TestAttach(t *testing.T)           { forEachProtocol(t, checks.AttachRoundTrip) }
func TestCopy(t *testing.T)             { forEachProtocol(t, checks.Copy) }

func TestPortForward(t *testing.T) {
	port := checks.StartEchoServer(t)
	forEachProtocol(t, func(t *testing.T, ctx context.Context, tg checks.Target, proto kubectl.Protocol) {
		checks.PortForward(t, ctx, tg, proto, port)
	})
}

func TestLogs(t *testing.T) {
	ctx := harness.TestContext(t)
	checks.Logs(t, ctx, viaRelay(t, ctx))
}

func TestLogsFollow(t *testing.T) {
	ctx := harness.TestContext(t)
	checks.LogsFollow(t, ctx, viaRelay(t, ctx))
}
