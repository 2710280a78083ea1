package kubelet_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

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

// checkUpgrade fails t unless kubectl's verbose stderr shows that the
// apiserver accepted exactly one upgrade, to proto.
func checkUpgrade(t *testing.T, proto kubectl.Protocol, stderr string) {
	t.Helper()
	if got := kubectl.Upgrades(stderr); len(got) != 1 || got[0] != proto.UpgradeHeader() {
		t.Errorf("kubectl upgraded to %q, want exactly [%s]", got, proto.UpgradeHeader())
	}
}

func run(ctx context.Context, env []string, stdin io.Reader, args ...string) (string, string, error) {
	return kubectl.Run(ctx, testCluster.AdminKubeconfig, env, stdin, args...)
}

func randomText(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestExecStdinRoundTrip(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, ctx context.Context, p pod, proto kubectl.Protocol) {
		env := proto.Env()
		in := randomText(t, 200<<10)
		out, stderr, err := run(ctx, env, strings.NewReader(in), kubectl.VerboseArg, "exec", "-i", "-n", p.namespace, p.name, "-c", p.container, "--", "cat")
		if err != nil {
			t.Fatal(err)
		}
		checkUpgrade(t, proto, stderr)
		if out != in {
			t.Fatalf("exec cat: got %d bytes back, want the %d bytes sent", len(out), len(in))
		}
	})
}

func TestExecExitCode(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, ctx context.Context, p pod, proto kubectl.Protocol) {
		env := proto.Env()
		_, _, err := run(ctx, env, nil, "exec", "-n", p.namespace, p.name, "--", "sh", "-c", "exit 3")
		if code := kubectl.ExitCode(err); code != 3 {
			t.Fatalf("exec exit 3: got exit code %d (err %v), want 3", code, err)
		}
	})
}

func TestExecStdoutStderrAndTarget(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, ctx context.Context, p pod, proto kubectl.Protocol) {
		env := proto.Env()
		out, stderr, err := run(ctx, env, nil, "exec", "-n", p.namespace, p.name, "-c", p.container, "--",
			"sh", "-c", `echo "$POD_NAMESPACE/$POD_NAME/$CONTAINER_NAME"; echo to-stderr >&2`)
		if err != nil {
			t.Fatal(err)
		}
		if want := p.namespace + "/" + p.name + "/" + p.container + "\n"; out != want {
			t.Errorf("stdout: got %q, want %q", out, want)
		}
		if !strings.Contains(stderr, "to-stderr") || strings.Contains(out, "to-stderr") {
			t.Errorf("stderr: got %q (stdout %q), want to-stderr on stderr only", stderr, out)
		}
	})
}

func TestAttachRoundTrip(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, ctx context.Context, p pod, proto kubectl.Protocol) {
		env := proto.Env()
		proc, err := kubectl.Start(ctx, testCluster.AdminKubeconfig, env, kubectl.VerboseArg, "attach", "-i", "-n", p.namespace, p.name, "-c", p.container)
		if err != nil {
			t.Fatal(err)
		}
		defer proc.Stop()
		for _, line := range []string{"hello attach", "second line"} {
			if _, err := io.WriteString(proc.Stdin, line+"\n"); err != nil {
				t.Fatal(err)
			}
			if err := proc.WaitForStdout(ctx, line+"\n"); err != nil {
				t.Fatal(err)
			}
		}
		proc.Stdin.Close()
		if err := proc.Wait(ctx); err != nil {
			t.Fatalf("kubectl attach after stdin EOF: %v", err)
		}
		if want := "hello attach\nsecond line\n"; proc.Stdout() != want {
			t.Errorf("attach stdout: got %q, want %q", proc.Stdout(), want)
		}
		checkUpgrade(t, proto, proc.Stderr())
	})
}

func TestPortForward(t *testing.T) {
	echo := startEchoServer(t)
	forEachProtocol(t, func(t *testing.T, ctx context.Context, p pod, proto kubectl.Protocol) {
		env := proto.Env()
		pf, err := kubectl.PortForward(ctx, testCluster.AdminKubeconfig, env, p.namespace, p.name, echo.port, kubectl.VerboseArg)
		if err != nil {
			t.Fatal(err)
		}
		defer pf.Stop()
		// Two connections in a row, then two at once, over one kubectl.
		echoRoundTrip(t, ctx, pf.LocalAddr, randomText(t, 100<<10))
		echoRoundTrip(t, ctx, pf.LocalAddr, "small")
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() { echoRoundTrip(t, ctx, pf.LocalAddr, fmt.Sprintf("parallel %d %s", i, randomText(t, 10<<10))) })
		}
		wg.Wait()
		pf.Stop()
		checkUpgrade(t, proto, pf.Stderr())
	})
}

func TestLogs(t *testing.T) {
	ctx := testContext(t)
	p := newPod(t, ctx)
	testKubelet.AppendLog(p.namespace, p.name, p.container, "first line")
	testKubelet.AppendLog(p.namespace, p.name, p.container, "second line")

	out, _, err := run(ctx, nil, nil, "logs", "-n", p.namespace, p.name, "-c", p.container)
	if err != nil {
		t.Fatal(err)
	}
	if want := "first line\nsecond line\n"; out != want {
		t.Errorf("logs: got %q, want %q", out, want)
	}
	out, _, err = run(ctx, nil, nil, "logs", "--tail=1", "-n", p.namespace, p.name, "-c", p.container)
	if err != nil {
		t.Fatal(err)
	}
	if want := "second line\n"; out != want {
		t.Errorf("logs --tail=1: got %q, want %q", out, want)
	}
}

func TestLogsFollow(t *testing.T) {
	ctx := testContext(t)
	p := newPod(t, ctx)
	testKubelet.AppendLog(p.namespace, p.name, p.container, "before follow")
	proc, err := kubectl.Start(ctx, testCluster.AdminKubeconfig, nil, "logs", "-f", "-n", p.namespace, p.name, "-c", p.container)
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Stop()
	if err := proc.WaitForStdout(ctx, "before follow\n"); err != nil {
		t.Fatal(err)
	}
	testKubelet.AppendLog(p.namespace, p.name, p.container, "after follow")
	if err := proc.WaitForStdout(ctx, "after follow\n"); err != nil {
		t.Fatal(err)
	}
	testKubelet.AppendLog(p.namespace, "other-pod", p.container, "not for us")
	testKubelet.AppendLog(p.namespace, p.name, p.container, "third")
	if err := proc.WaitForStdout(ctx, "third\n"); err != nil {
		t.Fatal(err)
	}
	if want := "before follow\nafter follow\nthird\n"; proc.Stdout() != want {
		t.Errorf("logs -f: got %q, want %q", proc.Stdout(), want)
	}
}

func TestCopy(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, ctx context.Context, p pod, proto kubectl.Protocol) {
		env := proto.Env()
		// exec runs locally, so the pod's file system is this host's.
		srcDir, podDir, backDir := t.TempDir(), t.TempDir(), t.TempDir()
		content := randomText(t, 64<<10)
		src := filepath.Join(srcDir, "data.txt")
		if err := os.WriteFile(src, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(podDir, "copied.txt")
		if _, _, err := run(ctx, env, nil, "cp", "-n", p.namespace, "-c", p.container, src, p.name+":"+dest); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(dest)
		if err != nil {
			t.Fatalf("file copied into the pod: %v", err)
		}
		if string(got) != content {
			t.Fatalf("file copied into the pod: got %d bytes, want %d", len(got), len(content))
		}

		// And back out of the pod.
		back := filepath.Join(backDir, "back.txt")
		if _, _, err := run(ctx, env, nil, "cp", "-n", p.namespace, "-c", p.container, p.name+":"+dest, back); err != nil {
			t.Fatal(err)
		}
		got, err = os.ReadFile(back)
		if err != nil {
			t.Fatalf("file copied out of the pod: %v", err)
		}
		if string(got) != content {
			t.Fatalf("file copied out of the pod: got %d bytes, want %d", len(got), len(content))
		}
	})
}

// echoServer is a TCP echo server on 127.0.0.1.
type echoServer struct {
	ln   net.Listener
	port int
}

func startEchoServer(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return &echoServer{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
}

// echoRoundTrip sends msg through addr, half-closes, and expects it back.
func echoRoundTrip(t *testing.T, ctx context.Context, addr, msg string) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, msg)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		t.Errorf("write to %s: %v", addr, werr)
	}
	if err != nil {
		t.Errorf("read from %s: %v", addr, err)
		return
	}
	if !bytes.Equal(got, []byte(msg)) {
		t.Errorf("echo through %s: got %d bytes, want %d", addr, len(got), len(msg))
	}
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
	echo := startEchoServer(t)
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
	pf, err := kubectl.PortForward(ctx, kc, kubectl.SPDY.Env(), ns, "pod1", echo.port)
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
	echoRoundTrip(t, ctx, pf.LocalAddr, "before stop")

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
