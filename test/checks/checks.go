// Package checks holds the kubectl streaming checks (exec, attach,
// port-forward, logs, cp) shared by the tests that run them against the
// test kubelet: straight through the apiserver (test/kubelet) and through
// the relay and tunnel (test/e2e). Each check runs the real kubectl with
// [Target.Kubeconfig] against a Running pod served by the test kubelet,
// and fails t on wrong bytes, a wrong exit code, or an upgrade to another
// protocol than the requested one (kubectl silently falls back from
// WebSocket to SPDY).
//
// The test kubelet runs exec locally and port-forwards to 127.0.0.1 on its
// own host, so [Copy] reads and writes files of this host and [PortForward]
// needs a server on this host, such as [StartEchoServer].
package checks

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/clusterconnect/clusterconnect/test/kubectl"
	"github.com/clusterconnect/clusterconnect/test/kubelet"
)

// Target is where the checks run: a kubeconfig kubectl uses and a Running
// pod behind the test kubelet.
type Target struct {
	Kubeconfig                string
	Kubelet                   *kubelet.Kubelet // for AppendLog
	Namespace, Pod, Container string
}

func (tg Target) run(ctx context.Context, env []string, stdin io.Reader, args ...string) (string, string, error) {
	return kubectl.Run(ctx, tg.Kubeconfig, env, stdin, args...)
}

// checkUpgrade fails t unless kubectl's verbose stderr shows that the
// apiserver accepted exactly one upgrade, to proto.
func checkUpgrade(t *testing.T, what string, proto kubectl.Protocol, stderr string) {
	t.Helper()
	checkUpgrades(t, what, proto, stderr, 1)
}

// checkUpgrades fails t unless kubectl's verbose stderr shows exactly n
// upgrades (one per streaming request kubectl made), all to proto.
func checkUpgrades(t *testing.T, what string, proto kubectl.Protocol, stderr string, n int) {
	t.Helper()
	got := kubectl.Upgrades(stderr)
	ok := len(got) == n
	for _, u := range got {
		ok = ok && u == proto.UpgradeHeader()
	}
	if !ok {
		t.Errorf("kubectl %s upgraded to %q, want exactly %d upgrade(s), each to %s", what, got, n, proto.UpgradeHeader())
	}
}

// ExecStdinRoundTrip sends 200 KiB of random text through `kubectl exec -i
// ... -- cat` and expects exactly those bytes back.
func ExecStdinRoundTrip(t *testing.T, ctx context.Context, tg Target, proto kubectl.Protocol) {
	in := RandomText(t, 200<<10)
	out, stderr, err := tg.run(ctx, proto.Env(), strings.NewReader(in),
		kubectl.VerboseArg, "exec", "-i", "-n", tg.Namespace, tg.Pod, "-c", tg.Container, "--", "cat")
	if err != nil {
		t.Fatal(err)
	}
	checkUpgrade(t, "exec", proto, stderr)
	if out != in {
		t.Fatalf("exec cat: got %d bytes back, want the %d bytes sent", len(out), len(in))
	}
}

// ExecExitCode expects kubectl exec to exit with the command's exit code.
func ExecExitCode(t *testing.T, ctx context.Context, tg Target, proto kubectl.Protocol) {
	_, stderr, err := tg.run(ctx, proto.Env(), nil,
		kubectl.VerboseArg, "exec", "-n", tg.Namespace, tg.Pod, "-c", tg.Container, "--", "sh", "-c", "exit 3")
	if code := kubectl.ExitCode(err); code != 3 {
		t.Fatalf("exec exit 3: got exit code %d (err %v), want 3", code, err)
	}
	checkUpgrade(t, "exec", proto, stderr)
}

// ExecStdoutStderr expects the command's stdout and stderr on kubectl's
// stdout and stderr, and the command to run for the target's namespace,
// pod and container.
func ExecStdoutStderr(t *testing.T, ctx context.Context, tg Target, proto kubectl.Protocol) {
	out, stderr, err := tg.run(ctx, proto.Env(), nil,
		kubectl.VerboseArg, "exec", "-n", tg.Namespace, tg.Pod, "-c", tg.Container, "--",
		"sh", "-c", `echo "$POD_NAMESPACE/$POD_NAME/$CONTAINER_NAME"; echo to-stderr >&2`)
	if err != nil {
		t.Fatal(err)
	}
	if want := tg.Namespace + "/" + tg.Pod + "/" + tg.Container + "\n"; out != want {
		t.Errorf("stdout: got %q, want %q", out, want)
	}
	if !strings.Contains(stderr, "to-stderr") || strings.Contains(out, "to-stderr") {
		t.Errorf("stderr: got %q (stdout %q), want to-stderr on stderr only", stderr, out)
	}
	checkUpgrade(t, "exec", proto, stderr)
}

// AttachRoundTrip writes lines to `kubectl attach -i` (the test kubelet
// echoes stdin), expects each back before sending the next, and expects
// kubectl to exit cleanly after stdin EOF.
func AttachRoundTrip(t *testing.T, ctx context.Context, tg Target, proto kubectl.Protocol) {
	proc, err := kubectl.Start(ctx, tg.Kubeconfig, proto.Env(),
		kubectl.VerboseArg, "attach", "-i", "-n", tg.Namespace, tg.Pod, "-c", tg.Container)
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
	checkUpgrade(t, "attach", proto, proc.Stderr())
}

// PortForward runs one `kubectl port-forward` to echoPort (an echo server
// on the kubelet's host, see [StartEchoServer]) and sends two connections
// in a row, then two at once, through it.
func PortForward(t *testing.T, ctx context.Context, tg Target, proto kubectl.Protocol, echoPort int) {
	pf, err := kubectl.PortForward(ctx, tg.Kubeconfig, proto.Env(), tg.Namespace, tg.Pod, echoPort, kubectl.VerboseArg)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Stop()
	EchoRoundTrip(t, ctx, pf.LocalAddr, RandomText(t, 100<<10))
	EchoRoundTrip(t, ctx, pf.LocalAddr, "small")
	msgs := []string{"parallel 0 " + RandomText(t, 10<<10), "parallel 1 " + RandomText(t, 10<<10)}
	var wg sync.WaitGroup
	for _, msg := range msgs {
		wg.Go(func() { EchoRoundTrip(t, ctx, pf.LocalAddr, msg) })
	}
	wg.Wait()
	pf.Stop()
	checkUpgrade(t, "port-forward", proto, pf.Stderr())
}

// Copy copies 64 KiB of random text into the pod with kubectl cp and back
// out, and expects the same bytes both times.
func Copy(t *testing.T, ctx context.Context, tg Target, proto kubectl.Protocol) {
	// exec runs locally, so the pod's file system is this host's.
	srcDir, podDir, backDir := t.TempDir(), t.TempDir(), t.TempDir()
	content := RandomText(t, 64<<10)
	src := filepath.Join(srcDir, "data.txt")
	if err := os.WriteFile(src, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(podDir, "copied.txt")
	_, stderr, err := tg.run(ctx, proto.Env(), nil,
		kubectl.VerboseArg, "cp", "-n", tg.Namespace, "-c", tg.Container, src, tg.Pod+":"+dest)
	if err != nil {
		t.Fatal(err)
	}
	// Two execs: `test -d <dest>` to see whether dest is a directory, then
	// `tar xmf -`.
	checkUpgrades(t, "cp into the pod", proto, stderr, 2)
	got, err := os.ReadFile(dest)
	if err != nil {
		t.Fatalf("file copied into the pod: %v", err)
	}
	if string(got) != content {
		t.Fatalf("file copied into the pod: got %d bytes, want %d", len(got), len(content))
	}

	// And back out of the pod.
	back := filepath.Join(backDir, "back.txt")
	_, stderr, err = tg.run(ctx, proto.Env(), nil,
		kubectl.VerboseArg, "cp", "-n", tg.Namespace, "-c", tg.Container, tg.Pod+":"+dest, back)
	if err != nil {
		t.Fatal(err)
	}
	checkUpgrade(t, "cp out of the pod", proto, stderr)
	got, err = os.ReadFile(back)
	if err != nil {
		t.Fatalf("file copied out of the pod: %v", err)
	}
	if string(got) != content {
		t.Fatalf("file copied out of the pod: got %d bytes, want %d", len(got), len(content))
	}
}

// Logs appends two lines to the container's log and expects them from
// kubectl logs, and only the last from kubectl logs --tail=1.
func Logs(t *testing.T, ctx context.Context, tg Target) {
	tg.Kubelet.AppendLog(tg.Namespace, tg.Pod, tg.Container, "first line")
	tg.Kubelet.AppendLog(tg.Namespace, tg.Pod, tg.Container, "second line")

	out, _, err := tg.run(ctx, nil, nil, "logs", "-n", tg.Namespace, tg.Pod, "-c", tg.Container)
	if err != nil {
		t.Fatal(err)
	}
	if want := "first line\nsecond line\n"; out != want {
		t.Errorf("logs: got %q, want %q", out, want)
	}
	out, _, err = tg.run(ctx, nil, nil, "logs", "--tail=1", "-n", tg.Namespace, tg.Pod, "-c", tg.Container)
	if err != nil {
		t.Fatal(err)
	}
	if want := "second line\n"; out != want {
		t.Errorf("logs --tail=1: got %q, want %q", out, want)
	}
}

// LogsFollow expects kubectl logs -f to show the line logged before it
// started and then each line logged while it runs, and none of another
// pod's.
func LogsFollow(t *testing.T, ctx context.Context, tg Target) {
	k := tg.Kubelet
	k.AppendLog(tg.Namespace, tg.Pod, tg.Container, "before follow")
	proc, err := kubectl.Start(ctx, tg.Kubeconfig, nil, "logs", "-f", "-n", tg.Namespace, tg.Pod, "-c", tg.Container)
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Stop()
	if err := proc.WaitForStdout(ctx, "before follow\n"); err != nil {
		t.Fatal(err)
	}
	k.AppendLog(tg.Namespace, tg.Pod, tg.Container, "after follow")
	if err := proc.WaitForStdout(ctx, "after follow\n"); err != nil {
		t.Fatal(err)
	}
	k.AppendLog(tg.Namespace, tg.Pod+"-other", tg.Container, "not for us")
	k.AppendLog(tg.Namespace, tg.Pod, tg.Container, "third")
	if err := proc.WaitForStdout(ctx, "third\n"); err != nil {
		t.Fatal(err)
	}
	if want := "before follow\nafter follow\nthird\n"; proc.Stdout() != want {
		t.Errorf("logs -f: got %q, want %q", proc.Stdout(), want)
	}
}

// StartEchoServer runs a TCP echo server on 127.0.0.1 (stopped by
// t.Cleanup) and returns its port.
func StartEchoServer(t *testing.T) int {
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
	return ln.Addr().(*net.TCPAddr).Port
}

// EchoRoundTrip sends msg to the echo server behind addr, half-closes, and
// expects msg back. It reports failures with t.Error, so it may run in
// goroutines other than the test's.
func EchoRoundTrip(t *testing.T, ctx context.Context, addr, msg string) {
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

// RandomText returns n random bytes, base64.
func RandomText(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}
