// Package cluster starts and stops a real etcd and a real kube-apiserver on
// 127.0.0.1 for tests.
//
// There is no controller-manager, scheduler or kubelet: objects that those
// would create (a namespace's "default" ServiceAccount, for example) must be
// created by the test; see [Cluster.CreateNamespace]. Authentication uses a
// static admin token (group system:masters), client certificates signed by
// the cluster CA and service-account tokens from the TokenRequest API.
//
// The binaries come from hack/tools.sh, which builds them once into a cache.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/clusterconnect/clusterconnect/test/proc"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ModulePath is the Go module whose hack/tools.sh builds the binaries.
const ModulePath = "github.com/clusterconnect/clusterconnect"

// ToolsBinEnv names the environment variable that, when set, is used as
// [Options.BinDir] instead of running hack/tools.sh.
const ToolsBinEnv = "CLUSTERCONNECT_TOOLS_BIN"

// DefaultStartTimeout bounds how long Start waits for etcd and the apiserver
// to become ready (not counting the build by hack/tools.sh), unless ctx has
// an earlier deadline.
const DefaultStartTimeout = 3 * time.Minute

// Options configure [Start]. The zero value is valid.
type Options struct {
	// Dir is a working directory for certificates, data and logs; empty
	// means a new directory from os.MkdirTemp, removed again by Stop.
	Dir string
	// BinDir holds the etcd and kube-apiserver binaries. Empty means
	// $CLUSTERCONNECT_TOOLS_BIN, or else the directory printed by
	// hack/tools.sh, found by walking up from the working directory to the
	// go.mod of ModulePath.
	BinDir string
	// AuthorizationMode is the value of --authorization-mode; empty means
	// "Node,RBAC".
	AuthorizationMode string
	// ExtraAPIServerArgs are added to the kube-apiserver command line. An
	// argument of the form --name=value replaces the default value of
	// --name (so that list flags are not merged); others are appended.
	ExtraAPIServerArgs []string
	// Logger receives progress lines; nil discards them.
	Logger *slog.Logger
}

// Cluster is a running etcd plus kube-apiserver. The processes write their
// output to etcd.log and kube-apiserver.log in Dir.
type Cluster struct {
	// URL of the apiserver, https://127.0.0.1:<port>.
	URL string
	// CAFile is the PEM file of the CA that signed the apiserver serving
	// certificate; the same CA is the apiserver's --client-ca-file.
	CAFile string
	// CAPEM is the content of CAFile.
	CAPEM []byte
	// AdminToken is a static bearer token of user "admin" in group
	// system:masters.
	AdminToken string
	// AdminKubeconfig is a kubeconfig file using URL, CAFile and AdminToken.
	AdminKubeconfig string
	// AdminCertFile and AdminKeyFile are a client certificate and key for
	// user "admin" in group system:masters, signed by CAFile.
	AdminCertFile, AdminKeyFile string
	// Dir is the working directory (certificates in pki/, logs, etcd data).
	Dir string
	// EtcdURL is the etcd client URL, http://127.0.0.1:<port>.
	EtcdURL string
	// BinDir is where etcd and kube-apiserver were taken from.
	BinDir string

	logger     *slog.Logger
	removeDir  bool
	etcd       *proc.Process
	apiserver  *proc.Process
	stopOnce   sync.Once
	stopErr    error
	pki        *pki
	apiArgs    []string
	apiLogPath string
}

// Start starts etcd and kube-apiserver and returns once /readyz answers ok
// and the "default" namespace exists. nil opts means defaults. If Start
// fails, everything it started is stopped again.
func Start(ctx context.Context, opts *Options) (*Cluster, error) {
	if opts == nil {
		opts = &Options{}
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	binDir, err := resolveBinDir(ctx, opts.BinDir, logger)
	if err != nil {
		return nil, err
	}
	c := &Cluster{logger: logger, BinDir: binDir, Dir: opts.Dir}
	if c.Dir == "" {
		c.Dir, err = os.MkdirTemp("", "clusterconnect-cluster-")
		if err != nil {
			return nil, fmt.Errorf("create cluster working directory: %w", err)
		}
		c.removeDir = true
	} else if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create cluster working directory %s: %w", c.Dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = c.Stop()
		}
	}()

	c.pki, err = generatePKI(c.Dir)
	if err != nil {
		return nil, fmt.Errorf("generate certificates for the test cluster: %w", err)
	}
	c.CAFile, c.CAPEM, c.AdminToken = c.pki.caCert, c.pki.caPEM, c.pki.adminToken
	c.AdminCertFile, c.AdminKeyFile = c.pki.adminCert, c.pki.adminKey

	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	const attempts = 3
	for attempt := 1; ; attempt++ {
		err = c.startProcesses(ctx, opts, attempt)
		if err == nil {
			break
		}
		c.stopProcesses()
		if errors.Is(err, proc.ErrAddrInUse) && attempt < attempts && ctx.Err() == nil {
			logger.Warn("port race while starting the test cluster, retrying with new ports", "attempt", attempt, "err", err)
			continue
		}
		return nil, err
	}

	c.AdminKubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := c.WriteKubeconfig(c.AdminKubeconfig, c.AdminToken); err != nil {
		return nil, err
	}
	if err := c.waitDefaultNamespace(ctx); err != nil {
		return nil, err
	}
	logger.Info("test cluster ready", "url", c.URL, "dir", c.Dir)
	ok = true
	return c, nil
}

// startProcesses starts etcd and kube-apiserver on fresh ports and waits for
// both to be ready.
func (c *Cluster) startProcesses(ctx context.Context, opts *Options, attempt int) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	c.EtcdURL = "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	c.URL = "https://127.0.0.1:" + strconv.Itoa(apiPort)

	dataDir := filepath.Join(c.Dir, "etcd-data")
	if err := os.RemoveAll(dataDir); err != nil {
		return fmt.Errorf("clean etcd data dir %s: %w", dataDir, err)
	}
	etcdArgs := []string{
		"--name=default",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + c.EtcdURL,
		"--advertise-client-urls=" + c.EtcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		"--initial-cluster-state=new",
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
	c.logger.Info("starting etcd", "attempt", attempt, "url", c.EtcdURL)
	c.etcd, err = proc.Start(c.logger, "etcd", filepath.Join(c.BinDir, "etcd"), filepath.Join(c.Dir, "etcd.log"), etcdArgs)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, c.etcd, c.EtcdURL+"/health", nil, "", func(body []byte) bool {
		return bytes.Contains(body, []byte(`"health":"true"`))
	}); err != nil {
		return fmt.Errorf("etcd did not become healthy: %w", err)
	}

	c.apiArgs = apiserverArgs(c, opts, apiPort)
	c.logger.Info("starting kube-apiserver", "attempt", attempt, "url", c.URL)
	c.apiLogPath = filepath.Join(c.Dir, "kube-apiserver.log")
	c.apiserver, err = proc.Start(c.logger, "kube-apiserver", filepath.Join(c.BinDir, "kube-apiserver"), c.apiLogPath, c.apiArgs)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAPEM)
	if err := waitReady(ctx, c.apiserver, c.URL+"/readyz", pool, c.AdminToken, func(body []byte) bool {
		return strings.TrimSpace(string(body)) == "ok"
	}); err != nil {
		return fmt.Errorf("kube-apiserver did not become ready: %w", err)
	}
	return nil
}

// apiserverArgs returns the kube-apiserver command line.
func apiserverArgs(c *Cluster, opts *Options, port int) []string {
	authz := opts.AuthorizationMode
	if authz == "" {
		authz = "Node,RBAC"
	}
	defaults := [][2]string{
		{"advertise-address", "127.0.0.1"},
		{"bind-address", "127.0.0.1"},
		{"secure-port", strconv.Itoa(port)},
		{"etcd-servers", c.EtcdURL},
		{"endpoint-reconciler-type", "none"},
		{"authorization-mode", authz},
		{"service-cluster-ip-range", "10.0.0.0/24"},
		{"cert-dir", filepath.Join(c.Dir, "apiserver-certs")},
		{"tls-cert-file", c.pki.servingCert},
		{"tls-private-key-file", c.pki.servKey},
		{"client-ca-file", c.pki.caCert},
		{"token-auth-file", c.pki.tokenFile},
		{"service-account-key-file", c.pki.saPub},
		{"service-account-signing-key-file", c.pki.saKey},
		{"service-account-issuer", "https://kubernetes.default.svc"},
		{"allow-privileged", "true"},
		{"kubelet-preferred-address-types", "InternalIP"},
		{"profiling", "false"},
	}
	overrides := map[string]bool{}
	for _, a := range opts.ExtraAPIServerArgs {
		if name, _, ok := strings.Cut(strings.TrimLeft(a, "-"), "="); ok && strings.HasPrefix(a, "--") {
			overrides[name] = true
		}
	}
	// The structured --authorization-config cannot be combined with
	// --authorization-mode.
	if overrides["authorization-config"] {
		overrides["authorization-mode"] = true
	}
	var args []string
	for _, kv := range defaults {
		if !overrides[kv[0]] {
			args = append(args, "--"+kv[0]+"="+kv[1])
		}
	}
	return append(args, opts.ExtraAPIServerArgs...)
}

// waitReady polls url until check accepts a 200 response body, the process
// exits, or ctx ends.
func waitReady(ctx context.Context, p *proc.Process, url string, roots *x509.CertPool, token string, check func([]byte) bool) error {
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		},
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		if p.Exited() {
			err := p.ExitErr()
			if p.AddrInUse() {
				err = fmt.Errorf("%w (%w)", err, proc.ErrAddrInUse)
			}
			return p.WithLog(err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("build request for %s: %w", url, err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && check(body) {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, firstLines(string(body), 15))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return p.WithLog(fmt.Errorf("%s not ready before the deadline (last answer: %s): %w", url, last, ctx.Err()))
		case <-tick.C:
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. They are free
// only at the time of the call; Start retries on a bind race.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitDefaultNamespace polls until the apiserver has created "default".
func (c *Cluster) waitDefaultNamespace(ctx context.Context) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := cs.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return c.apiserver.WithLog(fmt.Errorf("namespace %q was not created before the deadline (last error: %v): %w", metav1.NamespaceDefault, err, ctx.Err()))
		case <-tick.C:
		}
	}
}

// APIServerArgs returns the kube-apiserver command line arguments in use.
func (c *Cluster) APIServerArgs() []string { return append([]string(nil), c.apiArgs...) }

// APIServerLog returns the path of the kube-apiserver log file.
func (c *Cluster) APIServerLog() string { return c.apiLogPath }

// RESTConfig returns a client configuration for the admin token, trusting
// the cluster CA.
func (c *Cluster) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     c.AdminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: append([]byte(nil), c.CAPEM...)},
		QPS:             100,
		Burst:           200,
	}
}

// Clientset returns an admin clientset.
func (c *Cluster) Clientset() (*kubernetes.Clientset, error) {
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return nil, fmt.Errorf("create clientset for %s: %w", c.URL, err)
	}
	return cs, nil
}

// WriteKubeconfig writes a kubeconfig file at path that talks to the
// apiserver at c.URL, trusts the cluster CA and authenticates with token.
func (c *Cluster) WriteKubeconfig(path, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: c.CAPEM}
	cfg.AuthInfos["test"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test", Namespace: metav1.NamespaceDefault}
	cfg.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// CreateNamespace creates namespace name and its "default" ServiceAccount
// (there is no controller-manager to create it, and the ServiceAccount
// admission plugin rejects pods without it). Existing objects are fine.
func (c *Cluster) CreateNamespace(ctx context.Context, name string) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	return CreateNamespace(ctx, cs, name)
}

// CreateNamespace is [Cluster.CreateNamespace] for any clientset.
func CreateNamespace(ctx context.Context, cs kubernetes.Interface, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %q: %w", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name}}
	if _, err := cs.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ServiceAccount %s/default: %w", name, err)
	}
	return nil
}

// ServiceAccountToken creates ServiceAccount namespace/name (if missing),
// binds it to the cluster-admin ClusterRole when clusterAdmin is true, and
// returns a one-hour token for it from the TokenRequest API. The namespace
// must exist.
func (c *Cluster) ServiceAccountToken(ctx context.Context, namespace, name string, clusterAdmin bool) (string, error) {
	cs, err := c.Clientset()
	if err != nil {
		return "", err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create ServiceAccount %s/%s (does the namespace exist?): %w", namespace, name, err)
	}
	if clusterAdmin {
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "test:" + namespace + ":" + name + ":cluster-admin"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}},
		}
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("bind ServiceAccount %s/%s to cluster-admin: %w", namespace, name, err)
		}
	}
	expiry := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request a token for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// Stop stops kube-apiserver first (SIGTERM, SIGKILL after a grace period),
// then etcd, and removes Dir if Start created it. It is idempotent.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		c.stopProcesses()
		if c.removeDir {
			if err := os.RemoveAll(c.Dir); err != nil {
				c.stopErr = fmt.Errorf("remove cluster working directory %s: %w", c.Dir, err)
			}
		}
	})
	return c.stopErr
}

// stopProcesses stops the apiserver and then etcd. The apiserver keeps
// retrying for a long time once etcd is gone, so the order matters.
func (c *Cluster) stopProcesses() {
	c.apiserver.Stop()
	c.etcd.Stop()
}

// resolveBinDir finds the directory with etcd and kube-apiserver.
func resolveBinDir(ctx context.Context, dir string, logger *slog.Logger) (string, error) {
	source := "Options.BinDir"
	if dir == "" {
		dir, source = os.Getenv(ToolsBinEnv), "$"+ToolsBinEnv
	}
	if dir == "" {
		var err error
		dir, err = runToolsScript(ctx, logger)
		if err != nil {
			return "", err
		}
		source = "hack/tools.sh"
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s directory %s (from %s) has no usable %s; run hack/tools.sh or fix the setting: %w", bin, dir, source, bin, err)
		}
	}
	return dir, nil
}

// FindModuleRoot walks up from the working directory to the directory whose
// go.mod declares ModulePath.
func FindModuleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working directory: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && goModIs(data, ModulePath) {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod for module %s in %s or its parents; run the tests inside the repository or set $%s", ModulePath, wd, ToolsBinEnv)
		}
	}
}

func goModIs(data []byte, module string) bool {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "module" && strings.Trim(f[1], `"`) == module {
			return true
		}
	}
	return false
}

// runToolsScript runs hack/tools.sh, serialised across processes with a
// file lock (several test binaries may start at once), and returns the
// directory it prints last.
func runToolsScript(ctx context.Context, logger *slog.Logger) (string, error) {
	root, err := FindModuleRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "hack", "tools.sh")

	lockPath := filepath.Join(os.TempDir(), "clusterconnect-tools.lock")
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("open lock file %s: %w", lockPath, err)
	}
	defer lock.Close()
	if err := flock(ctx, lock); err != nil {
		return "", fmt.Errorf("lock %s (another test process building the tools?): %w", lockPath, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck

	logger.Info("running hack/tools.sh (the first run builds kube-apiserver, about 4 min)", "script", script)
	start := time.Now()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s failed (set $%s to a directory with etcd and kube-apiserver to skip it): %w\n%s", script, ToolsBinEnv, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir := strings.TrimSpace(lines[len(lines)-1])
	if dir == "" {
		return "", fmt.Errorf("%s printed no directory; stderr:\n%s", script, stderr.String())
	}
	logger.Info("tools ready", "dir", dir, "took", time.Since(start).Round(time.Millisecond))
	return dir, nil
}

// flock takes an exclusive lock on f, giving up when ctx ends.
func flock(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
