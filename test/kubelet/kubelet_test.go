package kubelet_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/test/checks"
	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
	"github.com/clusterconnect/clusterconnect/test/kubelet"
)

const nodeName = "test-node"

var (
	testCluster *cluster.Cluster
	testKubelet *kubelet.Kubelet
)

// withEnv starts the shared cluster and kubelet around the tests, and stops
// them before goleak looks for leftover goroutines.
type withEnv struct{ m *testing.M }

func (w withEnv) Run() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := cluster.Start(ctx, &cluster.Options{Logger: logger})
	if err != nil {
		fmt.Fprintf(os.Stderr, "start test cluster: %v\n", err)
		return 1
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop test cluster: %v\n", err)
		}
	}()
	k, err := kubelet.Start(ctx, logger)
	if err != nil {
		fmt.Fprintf(os.Stderr, "start test kubelet: %v\n", err)
		return 1
	}
	defer func() {
		if err := k.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop test kubelet: %v\n", err)
		}
	}()
	cs, err := c.Clientset()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := k.RegisterNode(ctx, cs, nodeName); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	testCluster, testKubelet = c, k
	return w.m.Run()
}

func TestMain(m *testing.M) {
	// No ignores needed: everything started is stopped before the check.
	goleak.VerifyTestMain(withEnv{m})
}

// pod is one test's namespace and running pod.
type pod struct {
	namespace, name, container string
}

// nsCounter makes namespace names unique when tests repeat (-count).
var nsCounter atomic.Int64

// namespaceFor returns a new namespace name derived from the test name.
func namespaceFor(t *testing.T) string {
	ns := strings.ToLower(strings.NewReplacer("/", "-", "_", "-", "=", "-").Replace(t.Name()))
	if len(ns) > 50 {
		ns = ns[:50]
	}
	return fmt.Sprintf("%s-%d", strings.Trim(ns, "-"), nsCounter.Add(1))
}

// newPod creates a namespace named after the test and a Running pod in it.
func newPod(t *testing.T, ctx context.Context) pod {
	t.Helper()
	ns := namespaceFor(t)
	if err := testCluster.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	cs, err := testCluster.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	p := pod{namespace: ns, name: "pod1", container: "main"}
	if err := kubelet.RunPod(ctx, cs, p.namespace, p.name, nodeName, p.container); err != nil {
		t.Fatal(err)
	}
	return p
}

// testContext returns a context for one test with a deadline.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// forEachProtocol runs f as a subtest for WebSocket and for SPDY.
func forEachProtocol(t *testing.T, f func(t *testing.T, ctx context.Context, p pod, proto kubectl.Protocol)) {
	for _, proto := range kubectl.Protocols() {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			f(t, ctx, newPod(t, ctx), proto)
		})
	}
}

// target returns the checks' target for p, through the apiserver.
func target(p pod) checks.Target {
	return checks.Target{
		Kubeconfig: testCluster.AdminKubeconfig,
		Kubelet:    testKubelet,
		Namespace:  p.namespace, Pod: p.name, Container: p.container,
	}
}

// forEachProtocolCheck runs check as a subtest for WebSocket and for SPDY,
// each on a new pod.
func forEachProtocolCheck(t *testing.T, check func(t *testing.T, ctx context.Context, tg checks.Target, proto kubectl.Protocol)) {
	forEachProtocol(t, func(t *testing.T, ctx context.Context, p pod, proto kubectl.Protocol) {
		check(t, ctx, target(p), proto)
	})
}

func TestExecStdinRoundTrip(t *testing.T) { forEachProtocolCheck(t, checks.ExecStdinRoundTrip) }

func TestExecExitCode(t *testing.T) { forEachProtocolCheck(t, checks.ExecExitCode) }

func TestExecStdoutStderrAndTarget(t *testing.T) { forEachProtocolCheck(t, checks.ExecStdoutStderr) }

func TestAttachRoundTrip(t *testing.T) { forEachProtocolCheck(t, checks.AttachRoundTrip) }

func TestPortForward(t *testing.T) {
	echoPort := checks.StartEchoServer(t)
	forEachProtocolCheck(t, func(t *testing.T, ctx context.Context, tg checks.Target, proto kubectl.Protocol) {
		checks.PortForward(t, ctx, tg, proto, echoPort)
	})
}

func TestCopy(t *testing.T) { forEachProtocolCheck(t, checks.Copy) }

func TestLogs(t *testing.T) {
	ctx := testContext(t)
	checks.Logs(t, ctx, target(newPod(t, ctx)))
}

func TestLogsFollow(t *testing.T) {
	ctx := testContext(t)
	checks.LogsFollow(t, ctx, target(newPod(t, ctx)))
}

// TestStopEndsActiveStreams stops a second kubelet while an attach, an exec,
// a port-forward and a log follow are running through it, and expects all
// of them to end promptly.
func TestStopEndsActiveStreams(t *testing.T) {
	ctx := testContext(t)
	k, err := kubelet.Start(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Stop()
	cs, err := testCluster.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	if err := k.RegisterNode(ctx, cs, nodeName+"-stop"); err != nil {
		t.Fatal(err)
	}
	ns := namespaceFor(t)
	if err := testCluster.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := kubelet.RunPod(ctx, cs, ns, "pod1", nodeName+"-stop", "main"); err != nil {
		t.Fatal(err)
	}
	echoPort := checks.StartEchoServer(t)
	k.AppendLog(ns, "pod1", "main", "hello")

	kc := testCluster.AdminKubeconfig
	attach, err := kubectl.Start(ctx, kc, nil, "attach", "-i", "-n", ns, "pod1")
	if err != nil {
		t.Fatal(err)
	}
	defer attach.Stop()
	exec, err := kubectl.Start(ctx, kc, nil, "exec", "-n", ns, "pod1", "--", "sh", "-c", "echo started; sleep 600")
	if err != nil {
		t.Fatal(err)
	}
	defer exec.Stop()
	logs, err := kubectl.Start(ctx, kc, nil, "logs", "-f", "-n", ns, "pod1")
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Stop()
	pf, err := kubectl.PortForward(ctx, kc, kubectl.SPDY.Env(), ns, "pod1", echoPort)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Stop()

	if _, err := io.WriteString(attach.Stdin, "ping\n"); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		p   *kubectl.Process
		out string
	}{{attach, "ping\n"}, {exec, "started\n"}, {logs, "hello\n"}} {
		if err := w.p.WaitForStdout(ctx, w.out); err != nil {
			t.Fatal(err)
		}
	}
	checks.EchoRoundTrip(t, ctx, pf.LocalAddr, "before stop")

	start := time.Now()
	if err := k.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := k.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Stop took %v", d)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for name, p := range map[string]*kubectl.Process{"attach": attach, "exec": exec, "logs -f": logs} {
		select {
		case <-p.Done():
		case <-waitCtx.Done():
			t.Errorf("kubectl %s still running after the kubelet stopped", name)
		}
	}
	// kubectl port-forward keeps listening, but the tunnel is gone.
	var d net.Dialer
	if c, err := d.DialContext(waitCtx, "tcp", pf.LocalAddr); err == nil {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, "after stop")
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Errorf("port-forward still echoes %q after the kubelet stopped", b)
		}
		c.Close()
	}
}
