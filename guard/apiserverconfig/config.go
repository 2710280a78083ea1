// Package apiserverconfig writes what the kube-apiserver needs to call
// guard: the authentication webhook kubeconfig, the authorization webhook
// kubeconfig and a structured AuthorizationConfiguration
// (apiserver.config.k8s.io/v1) that runs Node, RBAC and then guard.
//
// The apiserver takes them with
//
//	--authentication-token-webhook-config-file=<dir>/authn-webhook.kubeconfig
//	--authentication-token-webhook-version=v1
//	--authorization-config=<dir>/authorization-config.yaml
//
// and without --authorization-mode, which cannot be combined with
// --authorization-config. The kubeconfig paths inside the
// AuthorizationConfiguration must be absolute.
//
// guard requires a client certificate of the apiserver by default. Unless
// the apiserver's own is named (ClientCertFile), Write makes one with a CA
// of its own, embeds it in the kubeconfigs and writes the CA to
// <OutDir>/apiserver-client-ca.crt for guard's --webhook-client-ca-file;
// running Write again reuses them while they are valid for more than 30
// days.
package apiserverconfig

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// File names written into Options.OutDir.
const (
	AuthnKubeconfig     = "authn-webhook.kubeconfig"
	AuthzKubeconfig     = "authz-webhook.kubeconfig"
	AuthorizationConfig = "authorization-config.yaml"
)

// The match conditions that keep the webhook off requests guard has no
// opinion on anyway (service accounts, nodes, controllers, users of other
// authenticators): those are then decided by RBAC alone and keep working
// when guard is unreachable.
var DefaultMatchConditions = []string{
	"!request.user.startsWith('system:')",
	"has(request.extra) && 'oid' in request.extra",
}

// Options are the settings of `guard config`. Start from NewOptions.
type Options struct {
	// URL is guard's webhook base URL as the apiserver reaches it,
	// https://host:port. Required.
	URL string
	// CAFile is the CA that signed guard's serving certificate; it is
	// embedded in the kubeconfigs. Required.
	CAFile string
	// ClientCertFile and ClientKeyFile, when set, are the apiserver's
	// client certificate for guard (guard --webhook-client-ca-file names
	// its CA); the kubeconfigs reference them by path. Empty means Write
	// makes a certificate, and a CA for guard, in OutDir (ClientCAFile).
	ClientCertFile, ClientKeyFile string
	// OutDir is where the files are written.
	OutDir string
	// Dir is where the apiserver reads them (absolute); empty means OutDir
	// made absolute.
	Dir string
	// FailurePolicy is NoOpinion or Deny: what the apiserver does when a
	// match condition fails to evaluate or guard's answer is unusable.
	FailurePolicy string
	// Timeout of a webhook call, at most 30s.
	Timeout time.Duration
	// AuthorizedTTL and UnauthorizedTTL are the apiserver's own cache of
	// guard's answers (on top of guard's).
	AuthorizedTTL, UnauthorizedTTL time.Duration
	// MatchConditions: see DefaultMatchConditions; empty calls guard for
	// every request RBAC does not allow.
	MatchConditions []string
	// NoAuthn leaves out the authentication webhook kubeconfig.
	NoAuthn bool
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		OutDir:          ".",
		FailurePolicy:   "NoOpinion",
		Timeout:         10 * time.Second,
		AuthorizedTTL:   30 * time.Second,
		UnauthorizedTTL: 10 * time.Second,
		MatchConditions: append([]string(nil), DefaultMatchConditions...),
	}
}

type listFlag struct {
	dst *[]string
	set bool
}

func (l *listFlag) String() string {
	if l == nil || l.dst == nil {
		return ""
	}
	return strings.Join(*l.dst, ";")
}

func (l *listFlag) Set(v string) error {
	if !l.set {
		*l.dst, l.set = []string{}, true
	}
	if v = strings.TrimSpace(v); v != "" {
		*l.dst = append(*l.dst, v)
	}
	return nil
}

// Flags registers the options on fs.
func (o *Options) Flags(fs *flag.FlagSet) {
	fs.StringVar(&o.URL, "url", o.URL, "guard's webhook base URL as the apiserver reaches it, https://host:port (required)")
	fs.StringVar(&o.CAFile, "ca-file", o.CAFile, "CA that signed guard's serving certificate (embedded; required)")
	fs.StringVar(&o.ClientCertFile, "apiserver-client-cert-file", o.ClientCertFile, "client certificate the apiserver presents to guard (path as the apiserver sees it; default: make one, and its CA "+ClientCAFile+" for guard's --webhook-client-ca-file, in --out-dir)")
	fs.StringVar(&o.ClientKeyFile, "apiserver-client-key-file", o.ClientKeyFile, "its key")
	fs.StringVar(&o.OutDir, "out-dir", o.OutDir, "directory the files are written to")
	fs.StringVar(&o.Dir, "dir", o.Dir, "absolute directory the apiserver reads the files from (default: --out-dir, made absolute)")
	fs.StringVar(&o.FailurePolicy, "failure-policy", o.FailurePolicy, "webhook failurePolicy: NoOpinion or Deny")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "webhook timeout (at most 30s)")
	fs.DurationVar(&o.AuthorizedTTL, "authorized-ttl", o.AuthorizedTTL, "how long the apiserver caches guard's allows")
	fs.DurationVar(&o.UnauthorizedTTL, "unauthorized-ttl", o.UnauthorizedTTL, "how long the apiserver caches guard's denials")
	fs.Var(&listFlag{dst: &o.MatchConditions}, "match-condition", "CEL match condition of the webhook (repeatable; --match-condition= for none)")
	fs.BoolVar(&o.NoAuthn, "no-authn", o.NoAuthn, "do not write the authentication webhook kubeconfig")
}

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	if u, err := url.Parse(o.URL); err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		errs = append(errs, fmt.Errorf("--url %q: want guard's https://host:port", o.URL))
	}
	if o.CAFile == "" {
		errs = append(errs, errors.New("--ca-file is required: the CA that signed guard's serving certificate"))
	}
	if (o.ClientCertFile == "") != (o.ClientKeyFile == "") {
		errs = append(errs, errors.New("--apiserver-client-cert-file and --apiserver-client-key-file go together"))
	}
	if o.ClientCertFile != "" && (!filepath.IsAbs(o.ClientCertFile) || !filepath.IsAbs(o.ClientKeyFile)) {
		errs = append(errs, errors.New("--apiserver-client-cert-file and --apiserver-client-key-file: want absolute paths"))
	}
	if o.OutDir == "" {
		errs = append(errs, errors.New("--out-dir is required"))
	}
	if o.Dir != "" && !filepath.IsAbs(o.Dir) {
		errs = append(errs, fmt.Errorf("--dir %q: want an absolute path (the apiserver requires one)", o.Dir))
	}
	if o.FailurePolicy != "NoOpinion" && o.FailurePolicy != "Deny" {
		errs = append(errs, fmt.Errorf("--failure-policy %q: want NoOpinion or Deny", o.FailurePolicy))
	}
	if o.Timeout <= 0 || o.Timeout > 30*time.Second {
		errs = append(errs, fmt.Errorf("--timeout %s: want more than 0 and at most 30s", o.Timeout))
	}
	if o.AuthorizedTTL <= 0 || o.UnauthorizedTTL <= 0 {
		errs = append(errs, errors.New("--authorized-ttl and --unauthorized-ttl: want more than 0"))
	}
	return errors.Join(errs...)
}

// AuthorizationConfiguration is apiserver.config.k8s.io/v1's, the fields
// guard uses (the type lives in k8s.io/apiserver, which this module does
// not depend on).
type AuthorizationConfiguration struct {
	APIVersion  string       `json:"apiVersion"`
	Kind        string       `json:"kind"`
	Authorizers []Authorizer `json:"authorizers"`
}

// Authorizer is one entry of the chain.
type Authorizer struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Webhook *Webhook `json:"webhook,omitempty"`
}

// Webhook configures a webhook authorizer.
type Webhook struct {
	Timeout                                  string           `json:"timeout"`
	SubjectAccessReviewVersion               string           `json:"subjectAccessReviewVersion"`
	MatchConditionSubjectAccessReviewVersion string           `json:"matchConditionSubjectAccessReviewVersion"`
	FailurePolicy                            string           `json:"failurePolicy"`
	AuthorizedTTL                            string           `json:"authorizedTTL"`
	UnauthorizedTTL                          string           `json:"unauthorizedTTL"`
	ConnectionInfo                           ConnectionInfo   `json:"connectionInfo"`
	MatchConditions                          []MatchCondition `json:"matchConditions,omitempty"`
}

// ConnectionInfo says how to reach the webhook.
type ConnectionInfo struct {
	Type           string `json:"type"`
	KubeConfigFile string `json:"kubeConfigFile"`
}

// MatchCondition is a CEL expression over the SubjectAccessReview.
type MatchCondition struct {
	Expression string `json:"expression"`
}

// Files are what Write wrote (paths in OutDir) and the apiserver flags.
type Files struct {
	AuthnKubeconfig, AuthzKubeconfig, AuthorizationConfig string
	// WebhookClientCAFile is the CA of the client certificate Write made
	// for the apiserver, for guard's --webhook-client-ca-file; empty when
	// Options.ClientCertFile named the apiserver's own.
	WebhookClientCAFile string
	// ClientCertRenewed is true when Write made a new client certificate
	// and CA rather than reusing those in OutDir: guard must be restarted
	// with the new CA.
	ClientCertRenewed bool
	// APIServerFlags are the flags to add (paths as the apiserver sees them).
	APIServerFlags []string
}

// Authorization returns the AuthorizationConfiguration for kubeconfig (an
// absolute path).
func (o *Options) Authorization(kubeconfig string) *AuthorizationConfiguration {
	wh := &Webhook{
		Timeout:                                  o.Timeout.String(),
		SubjectAccessReviewVersion:               "v1",
		MatchConditionSubjectAccessReviewVersion: "v1",
		FailurePolicy:                            o.FailurePolicy,
		AuthorizedTTL:                            o.AuthorizedTTL.String(),
		UnauthorizedTTL:                          o.UnauthorizedTTL.String(),
		ConnectionInfo:                           ConnectionInfo{Type: "KubeConfigFile", KubeConfigFile: kubeconfig},
	}
	for _, e := range o.MatchConditions {
		wh.MatchConditions = append(wh.MatchConditions, MatchCondition{Expression: e})
	}
	return &AuthorizationConfiguration{
		APIVersion: "apiserver.config.k8s.io/v1",
		Kind:       "AuthorizationConfiguration",
		Authorizers: []Authorizer{
			{Type: "Node", Name: "node"},
			{Type: "RBAC", Name: "rbac"},
			{Type: "Webhook", Name: "guard", Webhook: wh},
		},
	}
}

// Kubeconfig returns a webhook kubeconfig for the endpoint path, with the
// apiserver's client credentials client.
func (o *Options) Kubeconfig(path string, caPEM []byte, client *clientcmdapi.AuthInfo) *clientcmdapi.Config {
	c := clientcmdapi.NewConfig()
	c.Clusters["guard"] = &clientcmdapi.Cluster{Server: strings.TrimSuffix(o.URL, "/") + path, CertificateAuthorityData: caPEM}
	c.AuthInfos["kube-apiserver"] = client
	c.Contexts["guard"] = &clientcmdapi.Context{Cluster: "guard", AuthInfo: "kube-apiserver"}
	c.CurrentContext = "guard"
	return c
}

// Write writes the files into OutDir.
func (o *Options) Write() (*Files, error) {
	caPEM, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", o.CAFile)
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = filepath.Abs(o.OutDir); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	f := &Files{
		AuthnKubeconfig:     filepath.Join(o.OutDir, AuthnKubeconfig),
		AuthzKubeconfig:     filepath.Join(o.OutDir, AuthzKubeconfig),
		AuthorizationConfig: filepath.Join(o.OutDir, AuthorizationConfig),
	}
	client := &clientcmdapi.AuthInfo{ClientCertificate: o.ClientCertFile, ClientKey: o.ClientKeyFile}
	if o.ClientCertFile == "" {
		pair, err := ensureClientPair(o.OutDir, time.Now())
		if err != nil {
			return nil, fmt.Errorf("the apiserver's client certificate for guard: %w", err)
		}
		client = &clientcmdapi.AuthInfo{ClientCertificateData: pair.certPEM, ClientKeyData: pair.keyPEM}
		f.WebhookClientCAFile, f.ClientCertRenewed = pair.caFile, pair.renewed
	}
	if !o.NoAuthn {
		if err := clientcmd.WriteToFile(*o.Kubeconfig("/tokenreviews", caPEM, client), f.AuthnKubeconfig); err != nil {
			return nil, err
		}
		f.APIServerFlags = append(f.APIServerFlags,
			"--authentication-token-webhook-config-file="+filepath.Join(dir, AuthnKubeconfig),
			"--authentication-token-webhook-version=v1")
	} else {
		f.AuthnKubeconfig = ""
	}
	if err := clientcmd.WriteToFile(*o.Kubeconfig("/subjectaccessreviews", caPEM, client), f.AuthzKubeconfig); err != nil {
		return nil, err
	}
	b, err := yaml.Marshal(o.Authorization(filepath.Join(dir, AuthzKubeconfig)))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(f.AuthorizationConfig, b, 0o644); err != nil {
		return nil, err
	}
	f.APIServerFlags = append(f.APIServerFlags, "--authorization-config="+filepath.Join(dir, AuthorizationConfig))
	return f, nil
}
