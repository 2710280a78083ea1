package connectctl

import (
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
)

// credential runs kube-credential and checks the ExecCredential is one
// kubectl can use: the Kubernetes token, and a client certificate with its
// key whose expiry is the credential's.
func (c *cli) credential(args ...string) (*clientauthv1.ExecCredentialStatus, *tls.Certificate) {
	c.t.Helper()
	out := c.ok(append([]string{"kube-credential", "--cluster", "prod"}, args...)...)
	var cred clientauthv1.ExecCredential
	if err := json.Unmarshal([]byte(out), &cred); err != nil {
		c.t.Fatalf("%v: %s", err, out)
	}
	st := cred.Status
	if cred.APIVersion != "client.authentication.k8s.io/v1" || cred.Kind != "ExecCredential" || st == nil || st.ExpirationTimestamp == nil {
		c.t.Fatalf("not an ExecCredential with an expiry: %s", out)
	}
	pair, err := tls.X509KeyPair([]byte(st.ClientCertificateData), []byte(st.ClientKeyData))
	if err != nil {
		c.t.Fatalf("client certificate and key: %v\n%s", err, out)
	}
	if _, ok := pair.PrivateKey.(*ecdsa.PrivateKey); !ok {
		c.t.Errorf("key is %T, want ECDSA", pair.PrivateKey)
	}
	return st, &pair
}

func TestKubeCredentialCachesAndRenews(t *testing.T) {
	f := newFrontDoor(t)
	c := newCLI(t)
	c.loginAdmin(f)
	t.Setenv(kubeTokenEnv, "sa-token")
	cache := filepath.Join(t.TempDir(), "certs")

	st, pair := c.credential("--cache-dir", cache)
	if st.Token != "sa-token" || f.Issued() != 1 {
		t.Fatalf("first call: token %q, %d certificates issued", st.Token, f.Issued())
	}
	if !st.ExpirationTimestamp.Time.Equal(pair.Leaf.NotAfter) {
		t.Errorf("expires %v, the certificate %v", st.ExpirationTimestamp.Time, pair.Leaf.NotAfter)
	}
	if cn := pair.Leaf.Subject.CommonName; cn != "admin:admin" {
		t.Errorf("certificate issued to %q, want the login's principal", cn)
	}
	files, _ := os.ReadDir(cache)
	if len(files) != 1 {
		t.Fatalf("cache: %v", files)
	}
	if info, _ := files[0].Info(); info.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode %v, want 0600", info.Mode().Perm())
	}
	csr := f.Calls("/api/v1/clientcertificate")
	if len(csr) != 1 || csr[0].Method != "POST" || !strings.Contains(string(csr[0].Body), "BEGIN CERTIFICATE REQUEST") {
		t.Errorf("client certificate calls: %+v", csr)
	}

	// Still valid for more than 5 minutes: the cached one, nothing asked.
	c.now = pair.Leaf.NotAfter.Add(-6 * time.Minute)
	again, _ := c.credential("--cache-dir", cache)
	if again.ClientCertificateData != st.ClientCertificateData || again.ClientKeyData != st.ClientKeyData || f.Issued() != 1 {
		t.Errorf("second call did not reuse the cached certificate (%d issued)", f.Issued())
	}

	// Less than 5 minutes left: a new key and certificate (for longer, so
	// that it has a future at the clock's time).
	c.now = pair.Leaf.NotAfter.Add(-4 * time.Minute)
	f.mu.Lock()
	f.certTTL = 2 * time.Hour
	f.mu.Unlock()
	renewed, rpair := c.credential("--cache-dir", cache)
	if f.Issued() != 2 || renewed.ClientKeyData == st.ClientKeyData || rpair.Leaf.SerialNumber.Cmp(pair.Leaf.SerialNumber) == 0 {
		t.Errorf("about to expire: %d issued, want a new key and certificate", f.Issued())
	}
	// And that one is cached in its place.
	c.credential("--cache-dir", cache)
	if f.Issued() != 2 {
		t.Errorf("the renewed certificate was not cached")
	}

	// --token-file beats the environment.
	tf := filepath.Join(t.TempDir(), "sa")
	os.WriteFile(tf, []byte("from-file\n"), 0o600)
	if st, _ := c.credential("--cache-dir", cache, "--token-file", tf); st.Token != "from-file" {
		t.Errorf("token %q, want the file's", st.Token)
	}
}

// TestKubeCredentialDefaultCacheIsPerLogin: without --cache-dir the
// certificates live in the user cache directory, one per relay login.
func TestKubeCredentialDefaultCacheIsPerLogin(t *testing.T) {
	f := newFrontDoor(t)
	f.verify = func(tok string) (api.Principal, bool) {
		id, _, ok := strings.Cut(strings.TrimPrefix(tok, api.APITokenPrefix), "_")
		return api.Principal{Kind: api.PrincipalKindToken, ID: id, Name: "ci-" + id}, ok && strings.HasPrefix(tok, api.APITokenPrefix)
	}
	c := newCLI(t)
	t.Setenv(kubeTokenEnv, "sa-token")
	c.ok("--relay", f.URL, "--ca-file", f.CAFile, "--relay-token", "cct_a_1", "kube-credential", "--cluster", "prod")
	c.ok("--relay", f.URL, "--ca-file", f.CAFile, "--relay-token", "cct_a_1", "kube-credential", "--cluster", "other")
	c.ok("--relay", f.URL, "--ca-file", f.CAFile, "--relay-token", "cct_b_2", "kube-credential", "--cluster", "prod")
	if f.Issued() != 2 {
		t.Errorf("%d certificates for two logins, want 2", f.Issued())
	}
	files, _ := filepath.Glob(filepath.Join(os.Getenv("XDG_CACHE_HOME"), "connectctl", "clientcerts", "*.json"))
	if len(files) != 2 {
		t.Errorf("default cache: %v", files)
	}
	for _, fn := range files {
		b, _ := os.ReadFile(fn)
		if strings.Contains(fn, "cct_") || strings.Contains(string(b), "cct_") {
			t.Errorf("the relay token leaked into the cache: %s", fn)
		}
	}
}

func TestKubeCredentialErrors(t *testing.T) {
	f := newFrontDoor(t)
	c := newCLI(t)
	c.fails("--cluster is required", "kube-credential")
	c.fails("set CONNECTCTL_KUBE_TOKEN", "kube-credential", "--cluster", "prod")
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	c.fails("is empty", "kube-credential", "--cluster", "prod", "--token-file", empty)
	t.Setenv(kubeTokenEnv, "sa-token")
	c.fails("no relay configured", "kube-credential", "--cluster", "prod")
	// A login the relay does not take: its message, and what to do.
	c.fails("refused a client certificate for your login (401): the bearer token is not the admin token",
		"--relay", f.URL, "--ca-file", f.CAFile, "--relay-token", "revoked", "kube-credential", "--cluster", "prod")
	if f.Issued() != 0 {
		t.Errorf("%d certificates issued", f.Issued())
	}
}
