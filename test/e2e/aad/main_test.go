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
//
// The process helpers are copied from test/e2e (which other work edits
// concurrently) rather than shared.
package aad

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
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
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/relay/certs"
	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/kubelet"
	"github.com/clusterconnect/clusterconnect/test/oidc"
	"github.com/clusterconnect/clusterconnect/test/proc"
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

// shared is the environment every test uses.
var shared struct {
	bin        string
	dir        string
	cluster    *cluster.Cluster
	kubelet    *kubelet.Kubelet
	issuer     *oidc.Issuer
	issuerCA   string
	relay      *relayProc
	proxy      *proc.Process
	proxyLog   string
	proxyURL   string // https://127.0.0.1:<port>, the agent's upstream
	healthURL  string
	saToken    string // cluster-admin service-account token (pass-through)
	kubeconfig string // relay-issued, with saToken
	guard      *guardProc
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(withEnv{m})
}

type withEnv struct{ m *testing.M }

func (w withEnv) Run() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir, err := os.MkdirTemp("", "clusterconnect-e2e-aad-")
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
		fmt.Fprintf(os.Stderr, "e2e/aad setup: %s: %v\n(logs kept in %s)\n", what, err, dir)
		return 1
	}
	if shared.bin, err = buildBinaries(ctx, dir); err != nil {
		return fail("build", err)
	}
	// guard's address and serving certificate come first: the apiserver
	// is started with the webhook configuration pointing at them.
	g, err := newGuardProc(filepath.Join(dir, "guard"))
	if err != nil {
		return fail("prepare guard", err)
	}
	shared.guard = g
	guardFlags, err := g.apiserverConfig(ctx, filepath.Join(dir, "apiserver"))
	if err != nil {
		return fail("guard config", err)
	}
	c, err := cluster.Start(ctx, &cluster.Options{Logger: log, ExtraAPIServerArgs: guardFlags})
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

	iss, err := oidc.Start(&oidc.Options{Clients: map[string]string{graphApp: graphSecret}, DeviceVersion: 1,
		AutoApprove: &oidc.User{Tenant: tenant, UPN: "dana@contoso.example", OID: "oid-dana", Groups: []string{"grp-device-users"}}})
	if err != nil {
		return fail("start OIDC issuer", err)
	}
	defer iss.Close()
	shared.issuer = iss
	shared.issuerCA = filepath.Join(dir, "issuer-ca.crt")
	if err := os.WriteFile(shared.issuerCA, iss.CAPEM, 0o600); err != nil {
		return fail("issuer CA", err)
	}

	p, proxyCA, err := startProxy(ctx, filepath.Join(dir, "proxy"))
	if err != nil {
		return fail("start kube-aad-proxy", err)
	}
	defer p.Stop()
	shared.proxy = p

	r, err := startRelay(ctx, filepath.Join(dir, "relay"))
	if err != nil {
		return fail("start relay", err)
	}
	defer r.stop()
	shared.relay = r
	a, err := r.connectCluster(ctx, clusterName, proxyCA)
	if err != nil {
		return fail("connect cluster", err)
	}
	defer a.Stop()
	if shared.kubeconfig, err = r.kubeconfig(ctx, clusterName, shared.saToken, "sa"); err != nil {
		return fail("kubeconfig", err)
	}
	// guard talks to the relay as the cluster, with the identity the
	// agent enrolled for (deferred after the cluster's Stop, it stops
	// before the apiserver).
	if err := g.writeIdentity(ctx, a, "agent-"+clusterName); err != nil {
		return fail("identity Secret", err)
	}
	if err := g.start(ctx); err != nil {
		return fail("start guard", err)
	}
	defer g.stop()
	code := w.m.Run()
	if code != 0 {
		keep = true
		fmt.Fprintf(os.Stderr, "e2e/aad: logs kept in %s\n", dir)
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
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/relay", "./cmd/clusteragent", "./cmd/connectctl", "./cmd/kube-aad-proxy", "./cmd/guard")
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

// impersonatorRules are what kube-aad-proxy's own identity needs.
var impersonatorRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"users", "groups"}, Verbs: []string{"impersonate"}},
	{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"userextras/oid", "userextras/tid"}, Verbs: []string{"impersonate"}},
}

// startProxy gives kube-aad-proxy a service account that may impersonate
// (and nothing else), a serving certificate, and starts it. It returns the
// process and the CA file the agent trusts for it.
func startProxy(ctx context.Context, dir string) (*proc.Process, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	c := shared.cluster
	cs, err := c.Clientset()
	if err != nil {
		return nil, "", err
	}
	testRoles["kube-aad-proxy-impersonator"] = impersonatorRules
	for name, rules := range testRoles {
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
			return nil, "", err
		}
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-aad-proxy-impersonator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "kube-aad-proxy-impersonator"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "kube-aad-proxy", Namespace: "kube-system"}},
	}, metav1.CreateOptions{}); err != nil {
		return nil, "", err
	}
	tok, err := c.ServiceAccountToken(ctx, "kube-system", "kube-aad-proxy", false)
	if err != nil {
		return nil, "", err
	}
	kc := filepath.Join(dir, "proxy.kubeconfig")
	if err := c.WriteKubeconfig(kc, tok); err != nil {
		return nil, "", err
	}
	files, err := certs.EnsureDev(filepath.Join(dir, "tls"), []string{"127.0.0.1", "localhost"})
	if err != nil {
		return nil, "", err
	}
	secret := filepath.Join(dir, "graph-secret")
	if err := os.WriteFile(secret, []byte(graphSecret+"\n"), 0o600); err != nil {
		return nil, "", err
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	hport, err := freePort()
	if err != nil {
		return nil, "", err
	}
	iss := shared.issuer
	shared.proxyLog = filepath.Join(dir, "kube-aad-proxy.log")
	shared.healthURL = "http://127.0.0.1:" + strconv.Itoa(hport)
	shared.proxyURL = "https://127.0.0.1:" + strconv.Itoa(port)
	p, err := proc.Start(slog.New(slog.DiscardHandler), "kube-aad-proxy", filepath.Join(shared.bin, "kube-aad-proxy"), shared.proxyLog, []string{
		"--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--health-listen", "127.0.0.1:" + strconv.Itoa(hport),
		"--tls-cert-file", files.CertFile, "--tls-key-file", files.KeyFile,
		"--kubeconfig", kc,
		"--issuer-url", iss.URL, "--v1-issuer-url", iss.V1Base(), "--issuer-ca-file", shared.issuerCA,
		"--tenant", tenant,
		"--audience", clientID, "--audience", appIDURI,
		"--graph-url", iss.GraphURL(), "--client-id", graphApp, "--client-secret-file", secret,
		"--jwks-min-refresh-interval", "100ms",
		"--shutdown-timeout", "3s",
		"--log-level", "debug",
	})
	if err != nil {
		return nil, "", err
	}
	if err := waitHTTP(ctx, p, shared.healthURL+"/readyz", nil); err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, files.CAFile, nil
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
	url     string
	dataDir string
	config  string // connectctl config file
}

func startRelay(ctx context.Context, dataDir string) (*relayProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	r := &relayProc{url: "https://127.0.0.1:" + strconv.Itoa(port), dataDir: dataDir, config: filepath.Join(dataDir, "connectctl.yaml")}
	p, err := proc.Start(slog.New(slog.DiscardHandler), "relay", filepath.Join(shared.bin, "relay"), filepath.Join(dataDir, "relay.log"), []string{
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

// connectCluster registers a cluster and starts an agent whose "kube"
// upstream is kube-aad-proxy, and waits for its tunnels. The agent keeps
// its identity Secret in namespace agent-<name> (it talks to the apiserver
// directly for that, with the admin kubeconfig).
func (r *relayProc) connectCluster(ctx context.Context, name, proxyCA string) (*proc.Process, error) {
	token := filepath.Join(r.dataDir, name+".token")
	if _, err := r.connectctl(ctx, "clusters", "create", name, "--token-file", token); err != nil {
		return nil, err
	}
	ns := "agent-" + name
	if err := shared.cluster.CreateNamespace(ctx, ns); err != nil {
		return nil, err
	}
	a, err := proc.Start(slog.New(slog.DiscardHandler), "clusteragent", filepath.Join(shared.bin, "clusteragent"), filepath.Join(r.dataDir, name+"-agent.log"), []string{
		"--relay-url", r.url,
		"--cluster", name,
		"--registration-token-file", token,
		"--namespace", ns,
		"--kubeconfig", shared.cluster.AdminKubeconfig,
		"--relay-ca-file", r.caFile(),
		"--tunnels", "2",
		"--upstream", shared.proxyURL,
		"--upstream-ca-file", proxyCA,
		"--listen", "127.0.0.1:0",
		"--keepalive-interval", "1s", "--keepalive-timeout", "2s",
		"--drain-timeout", "2s",
		"--backoff-max", "1s",
		"--log-level", "debug",
	})
	if err != nil {
		return nil, err
	}
	if err := r.waitChain(ctx, name); err != nil {
		a.Stop()
		return nil, a.WithLog(err)
	}
	return a, nil
}

// waitChain polls GET /clusters/<name>/version through the relay (a
// tunnel, the agent, kube-aad-proxy and the apiserver) until it answers
// 200. It looks only at the data path, not at the management API, whose
// shape other work is changing.
func (r *relayProc) waitChain(ctx context.Context, name string) error {
	ca, err := os.ReadFile(r.caFile())
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/clusters/"+name+"/version", nil)
		req.Header.Set("Authorization", "Bearer "+shared.saToken)
		resp, err := hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s not reachable through the relay: last: %s", name, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kubeconfig writes the relay-issued kubeconfig of cluster name with token
// (via connectctl, as a user would) to a file named after tag.
func (r *relayProc) kubeconfig(ctx context.Context, name, token, tag string) (string, error) {
	path := filepath.Join(r.dataDir, name+"-"+tag+".kubeconfig")
	_, err := r.connectctl(ctx, "kubeconfig", name, "--token", token, "--file", path)
	return path, err
}

// guardProc is the apiserver's guard: its ports and serving certificate
// are fixed before the apiserver starts, the process after the agent
// enrolled (its client certificate is the cluster's).
type guardProc struct {
	dir            string
	port, health   int
	url, healthURL string
	tls            certs.Files
	log            string
	// the cluster identity from the agent's Secret
	certFile, keyFile, caFile string
	p                         *proc.Process
}

func newGuardProc(dir string) (*guardProc, error) {
	g := &guardProc{dir: dir, log: filepath.Join(dir, "guard.log")}
	var err error
	if g.port, err = freePort(); err != nil {
		return nil, err
	}
	if g.health, err = freePort(); err != nil {
		return nil, err
	}
	g.url = "https://127.0.0.1:" + strconv.Itoa(g.port)
	g.healthURL = "http://127.0.0.1:" + strconv.Itoa(g.health)
	g.tls, err = certs.EnsureDev(filepath.Join(dir, "tls"), []string{"127.0.0.1", "localhost"})
	return g, err
}

// apiserverConfig runs `guard config` (failure policy NoOpinion, short
// apiserver cache TTLs) and returns the apiserver flags it prints.
func (g *guardProc) apiserverConfig(ctx context.Context, out string) ([]string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(shared.bin, "guard"), "config",
		"--url", g.url, "--ca-file", g.tls.CAFile, "--out-dir", out,
		"--timeout", "5s", "--authorized-ttl", "1s", "--unauthorized-ttl", "1s", "--failure-policy", "NoOpinion")
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

// writeIdentity waits for the agent's identity Secret in ns and writes its
// tls.crt, tls.key and ca.crt where guard reads them (as a Secret volume
// would).
func (g *guardProc) writeIdentity(ctx context.Context, agent *proc.Process, ns string) error {
	dir := filepath.Join(g.dir, "identity")
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
		s, err := cs.CoreV1().Secrets(ns).Get(ctx, "clusterconnect-identity", metav1.GetOptions{})
		if err == nil && len(s.Data["tls.crt"]) > 0 && len(s.Data["tls.key"]) > 0 && len(s.Data["ca.crt"]) > 0 {
			g.certFile, g.keyFile, g.caFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
			for path, key := range map[string]string{g.certFile: "tls.crt", g.keyFile: "tls.key", g.caFile: "ca.crt"} {
				if err := os.WriteFile(path, s.Data[key], 0o600); err != nil {
					return err
				}
			}
			return nil
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if agent.Exited() {
			return agent.WithLog(errors.New("the agent exited before writing its identity"))
		}
		select {
		case <-ctx.Done():
			return agent.WithLog(fmt.Errorf("no identity Secret: %w", ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// start runs guard (authn and authz webhooks; relay failures answered
// with deny) and waits for its /readyz.
func (g *guardProc) start(ctx context.Context) error {
	iss := shared.issuer
	p, err := proc.Start(slog.New(slog.DiscardHandler), "guard", filepath.Join(shared.bin, "guard"), g.log, []string{
		"--listen", "127.0.0.1:" + strconv.Itoa(g.port),
		"--health-listen", "127.0.0.1:" + strconv.Itoa(g.health),
		"--tls-cert-file", g.tls.CertFile, "--tls-key-file", g.tls.KeyFile,
		"--issuer-url", iss.URL, "--v1-issuer-url", iss.V1Base(), "--issuer-ca-file", shared.issuerCA,
		"--tenant", tenant, "--audience", clientID, "--audience", appIDURI,
		"--jwks-min-refresh-interval", "100ms",
		"--relay-url", shared.relay.url,
		"--client-cert-file", g.certFile, "--client-key-file", g.keyFile, "--relay-ca-file", g.caFile,
		"--relay-timeout", "2s",
		"--allowed-ttl", guardAllowedTTL.String(), "--denied-ttl", guardDeniedTTL.String(),
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
