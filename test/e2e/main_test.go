// Package e2e runs the whole chain as real processes: etcd, kube-apiserver,
// the relay and the clusterconnect agent (built from this module), and the
// real kubectl, which reaches the API server through the relay and a tunnel.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/connectctl"
	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/kubelet"
	"github.com/clusterconnect/clusterconnect/test/proc"
)

const nodeName = "e2e-node"

// shared is the environment every test uses: one apiserver, one test
// kubelet, one relay with one registered and connected cluster.
var shared struct {
	bin        string // directory of the built binaries
	dir        string
	cluster    *cluster.Cluster
	kubelet    *kubelet.Kubelet
	relay      *relayProc
	saToken    string // cluster-admin service-account token
	kubeconfig string // relay-issued, with saToken
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(withEnv{m})
}

type withEnv struct{ m *testing.M }

func (w withEnv) Run() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir, err := os.MkdirTemp("", "clusterconnect-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(dir)
		}
	}()
	shared.dir = dir
	fail := func(what string, err error) int {
		keep = true
		fmt.Fprintf(os.Stderr, "e2e setup: %s: %v\n(logs kept in %s)\n", what, err, dir)
		return 1
	}
	if shared.bin, err = buildBinaries(ctx, dir); err != nil {
		return fail("build", err)
	}
	c, err := cluster.Start(ctx, &cluster.Options{Logger: log})
	if err != nil {
		return fail("start cluster", err)
	}
	defer c.Stop()
	shared.cluster = c
	k, err := kubelet.Start(ctx, log)
	if err != nil {
		return fail("start kubelet", err)
	}
	defer k.Stop()
	shared.kubelet = k
	cs, err := c.Clientset()
	if err != nil {
		return fail("clientset", err)
	}
	if err := k.RegisterNode(ctx, cs, nodeName); err != nil {
		return fail("register node", err)
	}
	if shared.saToken, err = c.ServiceAccountToken(ctx, "kube-system", "e2e-admin", true); err != nil {
		return fail("service account token", err)
	}
	r, err := startRelay(ctx, filepath.Join(dir, "relay"), 0)
	if err != nil {
		return fail("start relay", err)
	}
	defer r.stop()
	shared.relay = r
	a, err := r.connectCluster(ctx, "e2e", 2)
	if err != nil {
		return fail("connect cluster", err)
	}
	defer a.Stop()
	if shared.kubeconfig, err = r.kubeconfig(ctx, "e2e", shared.saToken); err != nil {
		return fail("kubeconfig", err)
	}
	code := w.m.Run()
	if code != 0 {
		keep = true
		fmt.Fprintf(os.Stderr, "e2e: logs kept in %s\n", dir)
	}
	return code
}

// buildBinaries builds the commands under test into dir/bin.
func buildBinaries(ctx context.Context, dir string) (string, error) {
	root, err := cluster.FindModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/relay", "./cmd/clusteragent", "./cmd/connectctl")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// relayProc is a relay process and what it takes to talk to it.
type relayProc struct {
	p       *proc.Process
	port    int
	url     string
	dataDir string
	config  string // connectctl config file
}

// startRelay starts a relay on 127.0.0.1:port (0: a free port) with its
// state in dataDir and waits until it is ready.
func startRelay(ctx context.Context, dataDir string, port int, extraArgs ...string) (*relayProc, error) {
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	r := &relayProc{port: port, url: "https://127.0.0.1:" + strconv.Itoa(port), dataDir: dataDir, config: filepath.Join(dataDir, "connectctl.yaml")}
	p, err := proc.Start(slog.New(slog.DiscardHandler), "relay", filepath.Join(shared.bin, "relay"), filepath.Join(dataDir, "relay.log"), append([]string{
		"--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--data-dir", dataDir,
		"--external-url", r.url,
		"--keepalive-interval", "1s", "--keepalive-timeout", "2s",
		"--shutdown-timeout", "3s",
		"--log-level", "debug",
	}, extraArgs...))
	if err != nil {
		return nil, err
	}
	r.p = p
	if err := r.waitReady(ctx); err != nil {
		p.Stop()
		return nil, err
	}
	if _, err := r.connectctl(ctx, "login", "--relay", r.url, "--ca-file", r.caFile(), "--token-file", filepath.Join(dataDir, "admin-token")); err != nil {
		p.Stop()
		return nil, err
	}
	return r, nil
}

func (r *relayProc) caFile() string { return filepath.Join(r.dataDir, "ca.crt") }

func (r *relayProc) stop() { r.p.Stop() }

func (r *relayProc) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tr := &http.Transport{TLSClientConfig: insecureTLS()}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get(r.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if r.p.Exited() {
			return r.p.WithLog(r.p.ExitErr())
		}
		select {
		case <-ctx.Done():
			return r.p.WithLog(fmt.Errorf("relay not ready: %w", ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// connectctl runs the connectctl binary against this relay.
func (r *relayProc) connectctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(shared.bin, "connectctl"), args...)
	cmd.Env = append(os.Environ(), "CONNECTCTL_CONFIG="+r.config)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("connectctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (r *relayProc) client() (*connectctl.Client, error) {
	tok, err := os.ReadFile(filepath.Join(r.dataDir, "admin-token"))
	if err != nil {
		return nil, err
	}
	return connectctl.NewClient(r.url, strings.TrimSpace(string(tok)), r.caFile())
}

// connectCluster registers a cluster, starts an agent process for it whose
// upstream is the test apiserver, and waits for tunnels to be up.
func (r *relayProc) connectCluster(ctx context.Context, name string, tunnels int, extraArgs ...string) (*proc.Process, error) {
	token := filepath.Join(r.dataDir, name+".token")
	if _, err := r.connectctl(ctx, "clusters", "create", name, "--token-file", token); err != nil {
		return nil, err
	}
	a, err := startAgent(ctx, r, name, token, tunnels, extraArgs...)
	if err != nil {
		return nil, err
	}
	if err := r.waitTunnels(ctx, name, tunnels); err != nil {
		a.Stop()
		return nil, a.WithLog(err)
	}
	return a, nil
}

// startAgent starts an agent process for cluster name; its identity Secret
// lives in namespace agent-<name> of the test apiserver.
func startAgent(ctx context.Context, r *relayProc, name, tokenFile string, tunnels int, extraArgs ...string) (*proc.Process, error) {
	ns := "agent-" + name
	if err := shared.cluster.CreateNamespace(ctx, ns); err != nil {
		return nil, err
	}
	args := append([]string{
		"--relay-url", r.url,
		"--cluster", name,
		"--registration-token-file", tokenFile,
		"--namespace", ns,
		"--kubeconfig", shared.cluster.AdminKubeconfig,
		"--relay-ca-file", r.caFile(),
		"--tunnels", strconv.Itoa(tunnels),
		"--upstream", shared.cluster.URL,
		"--upstream-ca-file", shared.cluster.CAFile,
		"--listen", "127.0.0.1:0",
		"--keepalive-interval", "1s", "--keepalive-timeout", "2s",
		"--drain-timeout", "2s",
		"--backoff-max", "1s",
		"--heartbeat-interval", "300ms",
		"--log-level", "debug",
	}, extraArgs...)
	return proc.Start(slog.New(slog.DiscardHandler), "clusteragent", filepath.Join(shared.bin, "clusteragent"), filepath.Join(r.dataDir, name+"-agent.log"), args)
}

// waitTunnels polls the management API until cluster name has n tunnels.
func (r *relayProc) waitTunnels(ctx context.Context, name string, n int) error {
	cl, err := r.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last string
	for {
		v, err := cl.GetCluster(ctx, name)
		if err == nil && v.Properties.Tunnels == n {
			return nil
		}
		last = fmt.Sprintf("%+v %v", v, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s: want %d tunnels, last: %s", name, n, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitTunnels404 polls until the management API no longer knows the cluster.
func (r *relayProc) waitTunnels404(ctx context.Context, name string) error {
	cl, err := r.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := cl.GetCluster(ctx, name)
		var ae *connectctl.APIError
		if errors.As(err, &ae) && ae.StatusCode == 404 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s still known: %v", name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kubeconfig writes the relay-issued kubeconfig of name, with token, to a
// file (via connectctl, as a user would) and returns its path.
func (r *relayProc) kubeconfig(ctx context.Context, name, token string) (string, error) {
	path := filepath.Join(r.dataDir, name+".kubeconfig")
	_, err := r.connectctl(ctx, "kubeconfig", name, "--token", token, "--file", path)
	return path, err
}
