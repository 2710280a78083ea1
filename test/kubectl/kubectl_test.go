package kubectl_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/test/kubectl"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeKubectl points $KUBECTL at a shell script with the given body.
func fakeKubectl(t *testing.T, body string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubectl")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv(kubectl.BinaryEnv, path)
}

func TestRun(t *testing.T) {
	fakeKubectl(t, `echo "args: $*"; echo "env: $KUBECTL_REMOTE_COMMAND_WEBSOCKETS"; cat; echo oops >&2; exit 4`)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, stderr, err := kubectl.Run(ctx, "/kc", kubectl.SPDY.Env(), strings.NewReader("input\n"), "get", "ns")
	if want := "args: --kubeconfig=/kc get ns\nenv: false\ninput\n"; out != want {
		t.Errorf("stdout: got %q, want %q", out, want)
	}
	if stderr != "oops\n" {
		t.Errorf("stderr: got %q", stderr)
	}
	if code := kubectl.ExitCode(err); code != 4 {
		t.Errorf("exit code: got %d (%v), want 4", code, err)
	}
	if !strings.Contains(err.Error(), "oops") {
		t.Errorf("error should include stderr: %v", err)
	}
}

func TestRunKilledOnDeadline(t *testing.T) {
	fakeKubectl(t, `exec sleep 600`)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := kubectl.Run(ctx, "/kc", nil, nil, "get")
	if err == nil {
		t.Fatal("want an error")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run returned after %v", d)
	}
}

func TestPortForwardParsesPortAndStops(t *testing.T) {
	fakeKubectl(t, `echo "Forwarding from 127.0.0.1:43210 -> 8080"; exec sleep 600`)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	pf, err := kubectl.PortForward(ctx, "/kc", nil, "ns", "pod", 8080)
	if err != nil {
		t.Fatal(err)
	}
	pf.Stop()
	pf.Stop() // idempotent
	if pf.LocalPort != 43210 || pf.LocalAddr != "127.0.0.1:43210" {
		t.Errorf("got port %d addr %q", pf.LocalPort, pf.LocalAddr)
	}
}

func TestPortForwardFailsWhenKubectlExits(t *testing.T) {
	fakeKubectl(t, `echo "error: pod not running" >&2; exit 1`)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err := kubectl.PortForward(ctx, "/kc", nil, "ns", "pod", 8080)
	if err == nil || !strings.Contains(err.Error(), "pod not running") {
		t.Fatalf("want an error with kubectl's stderr, got %v", err)
	}
}

func TestUpgrades(t *testing.T) {
	stderr := `I1125 13:16:03.945046   30133 round_trippers.go:480]     Sec-Websocket-Protocol: v5.channel.k8s.io
I1125 13:16:03.948009   30133 round_trippers.go:581] Response Status: 101 Switching Protocols in 2 milliseconds
I1125 13:16:03.948062   30133 round_trippers.go:587]     Upgrade: websocket
I1125 13:16:04.105560   30148 round_trippers.go:587]     Upgrade: SPDY/3.1
`
	if got, want := kubectl.Upgrades(stderr), []string{"websocket", "SPDY/3.1"}; !slices.Equal(got, want) {
		t.Errorf("Upgrades: got %q, want %q", got, want)
	}
	if kubectl.WebSocket.UpgradeHeader() != "websocket" || kubectl.SPDY.UpgradeHeader() != "SPDY/3.1" {
		t.Error("UpgradeHeader mismatch")
	}
}
