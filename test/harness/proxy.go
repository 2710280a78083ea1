package harness

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/relay/certs"
	"github.com/clusterconnect/clusterconnect/test/proc"
)

// ProxyOptions configure [Env.StartProxy]. Issuer and Tenant are required.
type ProxyOptions struct {
	// Dir holds the proxy's certificates, kubeconfig and log; empty means
	// a new directory "kube-aad-proxy" below Env.Dir.
	Dir string
	// Issuer issues the tokens the proxy verifies, for Tenant and
	// Audiences.
	Issuer    *Issuer
	Tenant    string
	Audiences []string
	// GraphClientID and GraphClientSecret are the app the proxy resolves
	// groups overage with, from the issuer's Graph; empty leaves out the
	// Graph flags.
	GraphClientID, GraphClientSecret string
	// ExtraArgs are added after the harness's flags.
	ExtraArgs []string
}

// Proxy is a running kube-aad-proxy in front of the shared apiserver.
type Proxy struct {
	Proc *proc.Process
	// URL is https://127.0.0.1:<port>, an agent's upstream; CAFile the CA
	// the agent trusts for it.
	URL, CAFile string
	// HealthURL serves /readyz and /metrics.
	HealthURL string
	// Log is the process log.
	Log string
}

// impersonator is the ClusterRole the proxy's own identity needs, and no
// more.
const impersonator = "kube-aad-proxy-impersonator"

var impersonatorRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"users", "groups"}, Verbs: []string{"impersonate"}},
	{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"userextras/oid", "userextras/tid"}, Verbs: []string{"impersonate"}},
}

// StartProxy gives kube-aad-proxy a service account (kube-system/
// kube-aad-proxy) that may impersonate and do nothing else, a serving
// certificate, and starts it; it waits for its /readyz.
func (e *Env) StartProxy(ctx context.Context, opts ProxyOptions) (*Proxy, error) {
	dir, err := e.ensureDir(opts.Dir, "kube-aad-proxy")
	if err != nil {
		return nil, err
	}
	kc, err := e.impersonatorKubeconfig(ctx, filepath.Join(dir, "proxy.kubeconfig"))
	if err != nil {
		return nil, fmt.Errorf("kube-aad-proxy identity: %w", err)
	}
	files, err := certs.EnsureDev(filepath.Join(dir, "tls"), []string{"127.0.0.1", "localhost"})
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	hport, err := freePort()
	if err != nil {
		return nil, err
	}
	px := &Proxy{
		URL:       "https://127.0.0.1:" + strconv.Itoa(port),
		CAFile:    files.CAFile,
		HealthURL: "http://127.0.0.1:" + strconv.Itoa(hport),
		Log:       filepath.Join(dir, "kube-aad-proxy.log"),
	}
	args := []string{
		"--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--health-listen", "127.0.0.1:" + strconv.Itoa(hport),
		"--tls-cert-file", files.CertFile, "--tls-key-file", files.KeyFile,
		"--kubeconfig", kc,
	}
	args = append(args, opts.Issuer.VerifierArgs(opts.Tenant, opts.Audiences)...)
	if opts.GraphClientID != "" {
		secret := filepath.Join(dir, "graph-secret")
		if err := os.WriteFile(secret, []byte(opts.GraphClientSecret+"\n"), 0o600); err != nil {
			return nil, err
		}
		args = append(args, "--graph-url", opts.Issuer.GraphURL(), "--client-id", opts.GraphClientID, "--client-secret-file", secret)
	}
	args = append(args, "--shutdown-timeout", "3s", "--log-level", "debug")
	p, err := proc.Start(slog.New(slog.DiscardHandler), "kube-aad-proxy", e.Binary("kube-aad-proxy"), px.Log, append(args, opts.ExtraArgs...))
	if err != nil {
		return nil, fmt.Errorf("start kube-aad-proxy: %w", err)
	}
	e.OnStop(p.Stop)
	px.Proc = p
	if err := WaitHTTP(ctx, p, px.HealthURL+"/readyz", nil); err != nil {
		p.Stop()
		return nil, fmt.Errorf("start kube-aad-proxy: %w", err)
	}
	return px, nil
}

// impersonatorKubeconfig binds the impersonator ClusterRole to
// kube-system/kube-aad-proxy and writes a kubeconfig with its token.
func (e *Env) impersonatorKubeconfig(ctx context.Context, path string) (string, error) {
	c := e.Cluster
	cs, err := c.Clientset()
	if err != nil {
		return "", err
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: impersonator}, Rules: impersonatorRules}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: impersonator},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: impersonator},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "kube-aad-proxy", Namespace: "kube-system"}},
	}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	tok, err := c.ServiceAccountToken(ctx, "kube-system", "kube-aad-proxy", false)
	if err != nil {
		return "", err
	}
	return path, c.WriteKubeconfig(path, tok)
}
