package connectctl

import (
	"context"
	"encoding/json"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/test/oidc"
)

const (
	entraTenant = "tenant-1"
	relayScope  = "api://clusterconnect-relay/.default"
)

var (
	dana = oidc.User{Tenant: entraTenant, UPN: "dana@contoso.example", OID: "oid-dana", Groups: []string{"g1"}}
	erin = oidc.User{Tenant: entraTenant, UPN: "erin@contoso.example", OID: "oid-erin"}
)

// signIn runs fn, a command that signs in with the device code, and
// approves the code as user (a person at the verification page) once fn
// shows it on its standard error.
func signIn(t *testing.T, iss *oidc.Issuer, user oidc.User, fn func(stderr io.Writer) error) (string, error) {
	t.Helper()
	stderr := &syncBuffer{ch: make(chan struct{}, 1)}
	errc := make(chan error, 1)
	go func() { errc <- fn(stderr) }()
	approved := false
	for {
		select {
		case err := <-errc:
			if !approved && err == nil {
				t.Errorf("signed in without approving a device code; stderr:\n%s", stderr.String())
			}
			return stderr.String(), err
		case <-stderr.ch:
			if m := userCodeRE.FindStringSubmatch(stderr.String()); m != nil && !approved {
				approved = iss.Approve(m[1], user)
			}
		case <-t.Context().Done():
			t.Fatal("device-code login did not finish")
		}
	}
}

// entraFrontDoor is a front door that takes Entra access tokens for the
// relay's application from iss, as the relay does.
func entraFrontDoor(t *testing.T, iss *oidc.Issuer, caFile string) *frontDoor {
	hc, err := issuerClient(caFile)
	if err != nil {
		t.Fatal(err)
	}
	v, err := entra.NewVerifier(&entra.Config{IssuerURL: iss.URL, V1IssuerURL: iss.V1Base(), Tenants: []string{entraTenant},
		Audiences: []string{strings.TrimSuffix(relayScope, "/.default")}, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	f := newFrontDoor(t)
	f.roles = []string{api.RoleReader}
	f.verify = func(tok string) (api.Principal, bool) {
		id, err := v.Verify(context.Background(), tok)
		if err != nil {
			return api.Principal{}, false
		}
		return api.Principal{Kind: api.PrincipalKindUser, ID: id.ObjectID, Name: id.Username, Groups: id.Groups, Via: "bearer"}, true
	}
	return f
}

// TestLoginEntra: login --entra signs in with the device code against a
// local issuer and stores only the issuer settings; later management calls
// use the cached token and refresh it when it is about to expire;
// kube-credential's certificate expires with the token; kubeconfig --entra
// writes the get-token user; a second login signs in afresh.
func TestLoginEntra(t *testing.T) {
	iss, err := oidc.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "issuer-ca.crt")
	os.WriteFile(ca, iss.CAPEM, 0o600)
	f := entraFrontDoor(t, iss, ca)
	c := newCLI(t)
	login := []string{"login", "--relay", f.URL, "--ca-file", f.CAFile, "--entra", "--issuer-url", iss.V2Issuer(entraTenant),
		"--client-id", "connectctl", "--scope", relayScope, "--issuer-ca-file", ca}
	var out string
	stderr, err := signIn(t, iss, dana, func(stderr io.Writer) (err error) {
		out, err = c.run(t.Context(), stderr, login...)
		return err
	})
	if err != nil {
		t.Fatalf("login --entra: %v\n%s", err, stderr)
	}
	want := "Logged in to " + f.URL + " as user dana@contoso.example (object ID oid-dana, 1 groups).\nManagement roles: Reader\n"
	if !strings.HasPrefix(out, want) || strings.Contains(out, "To sign in") {
		t.Errorf("login output (device-code instructions belong on stderr):\n%s\nwant:\n%s", out, want)
	}
	cfg, err := LoadConfig(c.config)
	wantCfg := &Config{Relay: f.URL, CAFile: f.CAFile, Entra: &EntraConfig{IssuerURL: iss.V2Issuer(entraTenant), ClientID: "connectctl",
		Scopes: []string{relayScope}, IssuerCAFile: ca}}
	if err != nil || !reflect.DeepEqual(cfg, wantCfg) {
		t.Errorf("saved config %+v (entra %+v), %v; want %+v", cfg, cfg.Entra, err, wantCfg)
	}

	// The cached token serves the next calls: no sign-in, no token call.
	before := iss.Stats()
	if out := c.ok("whoami"); !strings.Contains(out, "oid-dana") {
		t.Errorf("whoami: %s", out)
	}
	if st := iss.Stats(); !reflect.DeepEqual(st.TokenCalls, before.TokenCalls) || st.DeviceAuthorizations != 1 {
		t.Errorf("whoami after login: token calls %v → %v, device logins %d", before.TokenCalls, st.TokenCalls, st.DeviceAuthorizations)
	}
	// About to expire (by the command's clock): refreshed, not signed in again.
	c.now = time.Now().Add(59 * time.Minute)
	c.ok("whoami")
	if st := iss.Stats(); st.TokenCalls["refresh_token"] != 1 || st.DeviceAuthorizations != 1 {
		t.Errorf("expiring token: refresh calls %d, device logins %d", st.TokenCalls["refresh_token"], st.DeviceAuthorizations)
	}
	c.now = time.Now()

	// kube-credential with the Entra login: the certificate is the user's
	// and the credential ends with the token that got it.
	f.mu.Lock()
	f.certTTL = 24 * time.Hour
	f.mu.Unlock()
	t.Setenv(kubeTokenEnv, "sa-token")
	st, pair := c.credential()
	files, _ := filepath.Glob(filepath.Join(os.Getenv("XDG_CACHE_HOME"), "connectctl", "tokens", "*.json"))
	if len(files) != 1 {
		t.Fatalf("token cache: %v", files)
	}
	tok, _ := readCachedToken(files[0])
	if d := st.ExpirationTimestamp.Time.Sub(tok.Expiry); d > 0 || d < -time.Second || !pair.Leaf.NotAfter.After(tok.Expiry) {
		t.Errorf("credential expires %v; token %v, certificate %v", st.ExpirationTimestamp.Time, tok.Expiry, pair.Leaf.NotAfter)
	}
	if cn := pair.Leaf.Subject.CommonName; cn != "user:oid-dana" || st.Token != "sa-token" {
		t.Errorf("certificate for %q, token %q", cn, st.Token)
	}
	c.credential()
	if f.Issued() != 1 {
		t.Errorf("%d certificates issued, want the cached one again", f.Issued())
	}

	// kubeconfig --entra: the get-token user from the saved settings, which
	// gets a token from the same cache.
	kf := filepath.Join(dir, "entra.kubeconfig")
	c.ok("kubeconfig", "prod", "--entra", "-f", kf)
	kc, err := clientcmd.LoadFromFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	u := kc.AuthInfos["prod"]
	wantExec := &clientcmdapi.ExecConfig{Command: exe, APIVersion: "client.authentication.k8s.io/v1", InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
		Args: []string{"get-token", "--issuer-url", iss.V2Issuer(entraTenant), "--client-id", "connectctl", "--scope", relayScope, "--issuer-ca-file", ca}}
	if u == nil || u.Exec == nil || u.Token != "" || !reflect.DeepEqual(u.Exec.Args, wantExec.Args) || u.Exec.Command != exe ||
		u.Exec.APIVersion != wantExec.APIVersion || u.Exec.InteractiveMode != wantExec.InteractiveMode || len(u.Exec.Env) != 0 {
		t.Errorf("entra user %+v, want exec %+v", u, wantExec)
	}
	if kc.Clusters["prod"].TLSServerName != "example.com" {
		t.Errorf("the relay's cluster entry was changed: %+v", kc.Clusters["prod"])
	}
	var cred struct {
		Status struct{ Token string } `json:"status"`
	}
	if err := json.Unmarshal([]byte(c.ok(u.Exec.Args...)), &cred); err != nil || cred.Status.Token != tok.AccessToken {
		t.Errorf("the kubeconfig's get-token: %+v %v", cred, err)
	}

	// login again: a new device-code sign-in (here as someone else), and
	// the old login's certificate is not handed out for the new one.
	stderr, err = signIn(t, iss, erin, func(stderr io.Writer) (err error) {
		out, err = c.run(t.Context(), stderr, login...)
		return err
	})
	if err != nil || !strings.Contains(out, "user erin@contoso.example") || iss.Stats().DeviceAuthorizations != 2 {
		t.Fatalf("second login: %v\n%s%s", err, out, stderr)
	}
	if _, pair := c.credential(); pair.Leaf.Subject.CommonName != "user:oid-erin" || f.Issued() != 2 {
		t.Errorf("after a new login: certificate for %q (%d issued)", pair.Leaf.Subject.CommonName, f.Issued())
	}
}

func TestLoginEntraDeniedSavesNothing(t *testing.T) {
	iss, err := oidc.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	ca := filepath.Join(t.TempDir(), "issuer-ca.crt")
	os.WriteFile(ca, iss.CAPEM, 0o600)
	f := entraFrontDoor(t, iss, ca)
	f.verify = func(string) (api.Principal, bool) { return api.Principal{}, false } // the relay takes no Entra token
	c := newCLI(t)
	_, err = signIn(t, iss, dana, func(stderr io.Writer) error {
		_, err := c.run(t.Context(), stderr, "login", "--relay", f.URL, "--ca-file", f.CAFile, "--entra", "--issuer-url", iss.V2Issuer(entraTenant),
			"--client-id", "connectctl", "--scope", relayScope, "--issuer-ca-file", ca)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "login check failed: relay answered 401: the bearer token is not the admin token, an API token or a valid Entra token") {
		t.Errorf("login the relay refuses: %v", err)
	}
	if _, err := os.Stat(c.config); !os.IsNotExist(err) {
		t.Errorf("a refused login was saved: %v", err)
	}
}
