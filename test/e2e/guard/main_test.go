// Package guard runs guard as a real process behind a real kube-apiserver:
// the apiserver authenticates Entra-shaped tokens (test/oidc) with guard's
// TokenReview webhook and authorizes with Node, RBAC and then guard's
// SubjectAccessReview webhook (a structured --authorization-config written
// by `guard config`); guard asks a real relay's checkAccess with the
// cluster certificate a real clusteragent enrolled for. kubectl talks to
// the apiserver directly (the relay → agent → kube-aad-proxy path is
// covered by test/e2e/aad). Role assignments are made with the relay's
// management API and connectctl.
//
// The process helpers are copied from test/e2e/aad rather than shared.
package guard

import (
	"context"
	"crypto/tls"
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
	"time"

	"testing"

	"go.uber.org/goleak"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/relay/certs"
	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/oidc"
	"github.com/clusterconnect/clusterconnect/test/proc"
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

// shared is the environment every test uses.
var shared struct {
	bin       string
	dir       string
	cluster   *cluster.Cluster
	issuer    *oidc.Issuer
	relay     *relayProc
	guard     *guardProc // the apiserver's, --relay-failure-mode=deny
	guardNoOp *guardProc // not wired to the apiserver, --relay-failure-mode=no-opinion
	agent     *proc.Process
	// identity files from the agent's Secret
	certFile, keyFile, caFile string
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(withEnv{m})
}

type withEnv struct{ m *testing.M }

func (w withEnv) Run() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir, err := os.MkdirTemp("", "clusterconnect-e2e-guard-")
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
		fmt.Fprintf(os.Stderr, "e2e/guard setup: %s: %v\n(logs kept in %s)\n", what, err, dir)
		return 1
	}
	if shared.bin, err = buildBinaries(ctx, dir); err != nil {
		return fail("build", err)
	}
	iss, err := oidc.Start(nil)
	if err != nil {
		return fail("start OIDC issuer", err)
	}
	defer iss.Close()
	shared.issuer = iss

	r, err := startRelay(ctx, filepath.Join(dir, "relay"), 0)
	if err != nil {
		return fail("start relay", err)
	}
	defer func() { shared.relay.stop() }()
	shared.relay = r

	// guard's address and serving certificate come first: the apiserver
	// is started with the webhook configuration pointing at them.
	g, err := newGuardProc(filepath.Join(dir, "guard"), "deny")
	if err != nil {
		return fail("prepare guard", err)
	}
	shared.guard = g
	apiFlags, err := g.apiserverConfig(ctx, filepath.Join(dir, "apiserver"))
	if err != nil {
		return fail("guard config", err)
	}
	c, err := cluster.Start(ctx, &cluster.Options{Logger: log, Dir: filepath.Join(dir, "cluster"),
		ExtraAPIServerArgs: append(apiFlags, "--authentication-token-webhook-cache-ttl=5s")})
	if err != nil {
		return fail("start cluster", err)
	}
	defer c.Stop()
	shared.cluster = c

	a, err := r.enrolAgent(ctx)
	if err != nil {
		return fail("enrol the cluster", err)
	}
	defer a.Stop()
	shared.agent = a
	if err := writeIdentity(ctx, filepath.Join(dir, "identity")); err != nil {
		return fail("identity Secret", err)
	}
	if err := g.start(ctx); err != nil {
		return fail("start guard", err)
	}
	defer g.stop()
	noop, err := newGuardProc(filepath.Join(dir, "guard-noop"), "no-opinion")
	if err != nil {
		return fail("prepare guard (no-opinion)", err)
	}
	if err := noop.start(ctx); err != nil {
		return fail("start guard (no-opinion)", err)
	}
	defer noop.stop()
	shared.guardNoOp = noop

	code := w.m.Run()
	if code != 0 {
		keep = true
		fmt.Fprintf(os.Stderr, "e2e/guard: logs kept in %s\n", dir)
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
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/relay", "./cmd/clusteragent", "./cmd/connectctl", "./cmd/guard")
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

// waitHTTP polls url until it answers 200, p exits, or 30 s pass.
func waitHTTP(ctx context.Context, p *proc.Process, url string, tlsCfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if p.Exited() {
			return p.WithLog(p.ExitErr())
		}
		select {
		case <-ctx.Done():
			return p.WithLog(fmt.Errorf("%s not ready: %w", url, ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// relayProc is a relay process and what it takes to talk to it.
type relayProc struct {
	p       *proc.Process
	port    int
	url     string
	dataDir string
	config  string // connectctl config file
}

// startRelay starts a relay on port (0: a free one) with dataDir; a
// restart passes the same both.
func startRelay(ctx context.Context, dataDir string, port int) (*relayProc, error) {
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
	p, err := proc.Start(slog.New(slog.DiscardHandler), "relay", filepath.Join(shared.bin, "relay"), filepath.Join(dataDir, fmt.Sprintf("relay-%d.log", time.Now().UnixNano())), []string{
		"--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--data-dir", dataDir,
		"--external-url", r.url,
		"--keepalive-interval", "1s", "--keepalive-timeout", "2s",
		"--shutdown-timeout", "3s",
		"--log-level", "debug",
	})
	if err != nil {
		return nil, err
	}
	r.p = p
	if err := waitHTTP(ctx, p, r.url+"/readyz", &tls.Config{InsecureSkipVerify: true}); err != nil {
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

// enrolAgent registers the cluster and runs a clusteragent with only the
// sync role (no tunnels are needed here); its identity role enrols and
// keeps the cluster certificate in the Secret guard's files come from.
func (r *relayProc) enrolAgent(ctx context.Context) (*proc.Process, error) {
	token := filepath.Join(r.dataDir, clusterName+".token")
	if _, err := r.connectctl(ctx, "clusters", "create", clusterName, "--token-file", token); err != nil {
		return nil, err
	}
	c := shared.cluster
	if err := c.CreateNamespace(ctx, agentNS); err != nil {
		return nil, err
	}
	return proc.Start(slog.New(slog.DiscardHandler), "clusteragent", filepath.Join(shared.bin, "clusteragent"), filepath.Join(r.dataDir, "agent.log"), []string{
		"--roles", "sync",
		"--relay-url", r.url,
		"--cluster", clusterName,
		"--registration-token-file", token,
		"--namespace", agentNS,
		"--kubeconfig", c.AdminKubeconfig,
		"--relay-ca-file", r.caFile(),
		"--upstream", c.URL,
		"--upstream-ca-file", c.CAFile,
		"--listen", "127.0.0.1:0",
		"--backoff-max", "1s",
		"--log-level", "debug",
	})
}

// writeIdentity waits for the agent's identity Secret and writes its
// tls.crt, tls.key and ca.crt where guard reads them (as a Secret volume
// would).
func writeIdentity(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cs, err := shared.cluster.Clientset()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		s, err := cs.CoreV1().Secrets(agentNS).Get(ctx, "clusterconnect-identity", metav1.GetOptions{})
		if err == nil && len(s.Data["tls.crt"]) > 0 && len(s.Data["tls.key"]) > 0 {
			shared.certFile, shared.keyFile, shared.caFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
			for path, key := range map[string]string{shared.certFile: "tls.crt", shared.keyFile: "tls.key", shared.caFile: "ca.crt"} {
				if err := os.WriteFile(path, s.Data[key], 0o600); err != nil {
					return err
				}
			}
			return nil
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if shared.agent.Exited() {
			return shared.agent.WithLog(errors.New("the agent exited before writing its identity"))
		}
		select {
		case <-ctx.Done():
			return shared.agent.WithLog(fmt.Errorf("no identity Secret: %w", ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// guardProc is a guard process with its ports and certificate fixed
// before it starts.
type guardProc struct {
	dir            string
	mode           string
	port, health   int
	url, healthURL string
	tls            certs.Files
	p              *proc.Process
	log            string
}

func newGuardProc(dir, mode string) (*guardProc, error) {
	g := &guardProc{dir: dir, mode: mode}
	var err error
	if g.port, err = freePort(); err != nil {
		return nil, err
	}
	if g.health, err = freePort(); err != nil {
		return nil, err
	}
	g.url = "https://127.0.0.1:" + strconv.Itoa(g.port)
	g.healthURL = "http://127.0.0.1:" + strconv.Itoa(g.health)
	g.log = filepath.Join(dir, "guard.log")
	g.tls, err = certs.EnsureDev(filepath.Join(dir, "tls"), []string{"127.0.0.1", "localhost"})
	return g, err
}

// apiserverConfig runs `guard config` and returns the apiserver flags it
// prints.
func (g *guardProc) apiserverConfig(ctx context.Context, out string) ([]string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(shared.bin, "guard"), "config",
		"--url", g.url, "--ca-file", g.tls.CAFile, "--out-dir", out,
		"--timeout", "5s", "--authorized-ttl", "1s", "--unauthorized-ttl", "1s", "--failure-policy", "Deny")
	b, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("guard config: %w\n%s", err, b)
	}
	var flags []string
	for _, f := range strings.Fields(string(b)) {
		if strings.HasPrefix(f, "--") && strings.Contains(f, "=") {
			flags = append(flags, f)
		}
	}
	if len(flags) != 3 {
		return nil, fmt.Errorf("guard config printed %d flags:\n%s", len(flags), b)
	}
	return flags, nil
}

func (g *guardProc) start(ctx context.Context) error {
	iss := shared.issuer
	issuerCA := filepath.Join(g.dir, "issuer-ca.crt")
	if err := os.WriteFile(issuerCA, iss.CAPEM, 0o600); err != nil {
		return err
	}
	p, err := proc.Start(slog.New(slog.DiscardHandler), "guard", filepath.Join(shared.bin, "guard"), g.log, []string{
		"--listen", "127.0.0.1:" + strconv.Itoa(g.port),
		"--health-listen", "127.0.0.1:" + strconv.Itoa(g.health),
		"--tls-cert-file", g.tls.CertFile, "--tls-key-file", g.tls.KeyFile,
		"--issuer-url", iss.URL, "--v1-issuer-url", iss.V1Base(), "--issuer-ca-file", issuerCA,
		"--tenant", tenant, "--audience", clientID,
		"--jwks-min-refresh-interval", "100ms",
		"--relay-url", shared.relay.url,
		"--client-cert-file", shared.certFile, "--client-key-file", shared.keyFile, "--relay-ca-file", shared.caFile,
		"--relay-timeout", "2s", "--relay-failure-mode", g.mode, "--relay-failure-backoff", "500ms",
		"--allowed-ttl", guardAllowedTTL.String(), "--denied-ttl", guardDeniedTTL.String(),
		"--skip-authz-group", "grp-breakglass",
		"--shutdown-timeout", "2s",
		"--log-level", "debug",
	})
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, p, g.healthURL+"/readyz", nil); err != nil {
		p.Stop()
		return err
	}
	g.p = p
	return nil
}

func (g *guardProc) stop() {
	if g.p != nil {
		g.p.Stop()
	}
}
