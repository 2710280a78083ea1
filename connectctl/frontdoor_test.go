package connectctl

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// TestMain lets a test run the test binary as connectctl itself, as kubectl
// runs the exec plugins a kubeconfig names (os.Executable is this binary).
func TestMain(m *testing.M) {
	if os.Getenv("CONNECTCTL_TEST_AS_MAIN") == "1" {
		if err := NewCommand(os.Stdout).Execute(); err != nil {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// call is one request the fake front door answered.
type call struct {
	Method, Path string
	Query        url.Values
	Body         []byte
}

// frontDoor is a relay's front door as the contract in pkg/api describes
// it, over TLS: management calls with bearer tokens, relay client
// certificates from CSRs, and a data path that wants both a client
// certificate and the Kubernetes token.
type frontDoor struct {
	t   *testing.T
	srv *httptest.Server
	// CAFile trusts the server.
	CAFile string
	// URL is the relay's base URL.
	URL string

	// verify maps a bearer token to a principal; the default knows
	// "admin-token" as the admin.
	verify func(token string) (api.Principal, bool)
	roles  []string
	// certTTL is the lifetime of issued client certificates (default 1h).
	certTTL time.Duration

	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey

	mu          sync.Mutex
	calls       []call
	issued      int
	tokens      []api.APIToken
	assignments []api.RoleAssignment
	audit       []api.AuditRecord
}

func newFrontDoor(t *testing.T) *frontDoor {
	t.Helper()
	f := &frontDoor{t: t, certTTL: time.Hour, roles: []string{api.RoleOwner}}
	f.verify = func(tok string) (api.Principal, bool) {
		return api.Principal{Kind: api.PrincipalKindAdmin, ID: "admin", Via: "bearer"}, tok == "admin-token"
	}
	var err error
	if f.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test relay client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &f.caKey.PublicKey, f.caKey)
	if err != nil {
		t.Fatal(err)
	}
	f.caCert, _ = x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(f.caCert)
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.URL = f.srv.URL
	f.CAFile = filepath.Join(t.TempDir(), "relay-ca.crt")
	if err := os.WriteFile(f.CAFile, f.caPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *frontDoor) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
}

// Calls returns the management calls so far whose path starts with prefix.
func (f *frontDoor) Calls(prefix string) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls {
		if strings.HasPrefix(c.Path, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// Issued counts the client certificates issued.
func (f *frontDoor) Issued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issued
}

func status(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(api.Status{Kind: "Status", Message: msg, Reason: reason, Code: code})
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (f *frontDoor) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, api.ClusterProxyPrefix) {
		f.dataPath(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.calls = append(f.calls, call{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Body: body})
	f.mu.Unlock()
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	p, ok := f.verify(tok)
	if !ok {
		status(w, http.StatusUnauthorized, api.ReasonUnauthenticated, "the bearer token is not the admin token, an API token or a valid Entra token")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == api.WhoAmIPath:
		reply(w, http.StatusOK, api.WhoAmI{Principal: p, Roles: f.roles})
	case r.Method == http.MethodPost && r.URL.Path == api.TokensPath:
		var req api.APITokenRequest
		if err := json.Unmarshal(body, &req); err != nil || req.Name == "" {
			status(w, http.StatusBadRequest, "BadRequest", "name is required")
			return
		}
		ttl := time.Duration(req.ExpiresInSeconds) * time.Second
		if ttl == 0 {
			ttl = 24 * time.Hour
		}
		id := fmt.Sprintf("tok%d", len(f.tokens)+1)
		v := api.APIToken{ID: id, Name: req.Name, Role: req.Role, CreatedAt: t0, ExpiresAt: t0.Add(ttl), CreatedBy: p.ID}
		f.tokens = append(f.tokens, v)
		v.Token = api.APITokenPrefix + id + "_s3cret"
		reply(w, http.StatusCreated, v)
	case r.Method == http.MethodGet && r.URL.Path == api.TokensPath:
		reply(w, http.StatusOK, api.TokenList{Value: f.tokens})
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, api.TokensPath+"/"):
		id := strings.TrimPrefix(r.URL.Path, api.TokensPath+"/")
		for i, v := range f.tokens {
			if v.ID == id {
				f.tokens = append(f.tokens[:i], f.tokens[i+1:]...)
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		status(w, http.StatusNotFound, "NotFound", fmt.Sprintf("API token %q does not exist", id))
	case r.Method == http.MethodPost && r.URL.Path == api.RoleAssignmentsPath:
		var req api.AssignmentRequest
		json.Unmarshal(body, &req)
		a := api.RoleAssignment{ID: fmt.Sprintf("ra%d", len(f.assignments)+1), Role: req.Role, PrincipalID: req.PrincipalID,
			PrincipalType: req.PrincipalType, Cluster: req.Cluster, Namespace: req.Namespace, CreatedAt: t0, ExpiresAt: req.ExpiresAt, CreatedBy: p.ID}
		f.assignments = append(f.assignments, a)
		reply(w, http.StatusCreated, a)
	case r.Method == http.MethodGet && r.URL.Path == api.RoleAssignmentsPath:
		reply(w, http.StatusOK, api.AssignmentList{Value: f.assignments})
	case r.Method == http.MethodGet && r.URL.Path == api.AuditPath:
		reply(w, http.StatusOK, api.AuditList{Value: f.audit})
	case r.Method == http.MethodPost && r.URL.Path == api.ClientCertificatePath:
		f.issue(w, body, p)
	case r.Method == http.MethodGet && r.URL.Path == api.KubeconfigPath("prod"):
		b, _ := clientcmd.Write(*f.kubeconfig("prod"))
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(b)
	case strings.HasPrefix(r.URL.Path, api.ClustersPath+"/"):
		status(w, http.StatusNotFound, "NotFound", "cluster is not registered")
	default:
		status(w, http.StatusNotFound, "NotFound", r.Method+" "+r.URL.Path+" is not part of the contract")
	}
}

// kubeconfig is what the relay issues: its URL for the cluster, its CA and
// a TLS server name; a user entry without a credential.
func (f *frontDoor) kubeconfig(name string) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cl := clientcmdapi.NewCluster()
	cl.Server = api.ClusterServerURL(f.URL, name)
	cl.CertificateAuthorityData = f.caPEM()
	cl.TLSServerName = "example.com" // httptest's certificate names it
	cfg.Clusters[name] = cl
	cfg.AuthInfos[name] = clientcmdapi.NewAuthInfo()
	ctx := clientcmdapi.NewContext()
	ctx.Cluster, ctx.AuthInfo = name, name
	cfg.Contexts[name] = ctx
	cfg.CurrentContext = name
	return cfg
}

// issue signs a CSR for the caller; f.mu is held.
func (f *frontDoor) issue(w http.ResponseWriter, body []byte, p api.Principal) {
	var req api.ClientCertificateRequest
	json.Unmarshal(body, &req)
	blk, _ := pem.Decode([]byte(req.CSR))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		status(w, http.StatusBadRequest, "BadRequest", "csr is not a PEM CERTIFICATE REQUEST")
		return
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		status(w, http.StatusBadRequest, "BadRequest", "csr: "+err.Error())
		return
	}
	f.issued++
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(f.issued + 1)), Subject: pkix.Name{CommonName: p.Kind + ":" + p.ID},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(f.certTTL).Truncate(time.Second),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.caCert, csr.PublicKey, f.caKey)
	if err != nil {
		status(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	reply(w, http.StatusCreated, api.CertificateResponse{
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		CABundle:    string(f.caPEM()),
		NotAfter:    tmpl.NotAfter.UTC().Format(time.RFC3339),
	})
}

// dataPath is the cluster proxy: it wants a relay client certificate and
// answers who it saw, with the bearer token it would pass on.
func (f *frontDoor) dataPath(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		status(w, http.StatusUnauthorized, api.ReasonUnauthenticated, "no relay client certificate")
		return
	}
	reply(w, http.StatusOK, map[string]string{
		"cn":     r.TLS.PeerCertificates[0].Subject.CommonName,
		"bearer": strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "),
		"path":   r.URL.Path,
	})
}

// cli runs connectctl commands with a clock, in an isolated environment.
type cli struct {
	t      *testing.T
	now    time.Time
	config string
}

// newCLI isolates connectctl from the user's files and environment.
func newCLI(t *testing.T) *cli {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	t.Setenv("HOME", dir)
	for _, k := range []string{"CONNECTCTL_RELAY", "CONNECTCTL_RELAY_TOKEN", "CONNECTCTL_CA_FILE", kubeTokenEnv} {
		t.Setenv(k, "")
	}
	c := &cli{t: t, now: time.Now(), config: filepath.Join(dir, "connectctl.yaml")}
	t.Setenv("CONNECTCTL_CONFIG", c.config)
	return c
}

// run runs connectctl with args; stderr may be nil.
func (c *cli) run(ctx context.Context, stderr io.Writer, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := newCommand(&out, func() time.Time { return c.now })
	if stderr == nil {
		stderr = io.Discard
	}
	cmd.SetErr(stderr)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func (c *cli) ok(args ...string) string {
	c.t.Helper()
	out, err := c.run(c.t.Context(), nil, args...)
	if err != nil {
		c.t.Fatalf("connectctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (c *cli) fails(want string, args ...string) {
	c.t.Helper()
	if _, err := c.run(c.t.Context(), nil, args...); err == nil || !strings.Contains(err.Error(), want) {
		c.t.Errorf("connectctl %s: %v, want an error containing %q", strings.Join(args, " "), err, want)
	}
}

// loginAdmin logs c in to f with the admin token from a file.
func (c *cli) loginAdmin(f *frontDoor) string {
	c.t.Helper()
	tf := filepath.Join(c.t.TempDir(), "admin-token")
	os.WriteFile(tf, []byte("admin-token\n"), 0o600)
	return c.ok("login", "--relay", f.URL, "--ca-file", f.CAFile, "--token-file", tf)
}
