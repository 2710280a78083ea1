package aad

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
)

// entraKubeconfig is the relay-issued kubeconfig with only an Entra token
// as credential (Entra mode: no relay client certificate; the relay
// verifies the token itself and passes it on to kube-aad-proxy).
func entraKubeconfig(t *testing.T, token string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(shared.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for k := range cfg.AuthInfos {
		cfg.AuthInfos[k] = &clientcmdapi.AuthInfo{Token: token}
	}
	path := filepath.Join(t.TempDir(), "entra.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// forged is a token shaped like the tenant's, signed by a key the issuer
// never published (an unknown kid).
func forged(t *testing.T, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := jws.CompactSerialize()
	return s
}

// In Entra mode the relay admits a user only with a role assignment on the
// cluster; without one it answers 403 itself, and a time-bound assignment
// shows its end in role list.
func TestRelayAdmitsEntraUserByAssignment(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	group := unique("grp-connect")
	bind(t, ctx, ns, "Group", group, viewRole)
	createPod(t, ctx, ns, "pod1")
	u := user("gil@contoso.example", group)
	kc := entraKubeconfig(t, mint(t, u))

	_, stderr, err := kubectl.Run(ctx, kc, nil, nil, "get", "pods", "-n", ns)
	if err == nil || !strings.Contains(stderr, "may not connect to cluster") {
		t.Fatalf("without an assignment: err=%v\n%s", err, stderr)
	}
	if _, err := shared.relay.Connectctl(ctx, "role", "assign", "--assignee", u.OID, "--role", api.RoleClusterUser, "--cluster", clusterName, "--expires", "1h"); err != nil {
		t.Fatal(err)
	}
	// The relay admits; kube-aad-proxy impersonates; the apiserver's RBAC
	// (the group's binding) decides.
	if out := kubectlOK(t, ctx, kc, "get", "pods", "-n", ns, "-o", "name"); !strings.Contains(out, "pod/pod1") {
		t.Errorf("get pods with Cluster User:\n%s", out)
	}
	out, err := shared.relay.Connectctl(ctx, "role", "list", "--cluster", clusterName)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, u.OID) || !strings.Contains(out, "(in 59m") && !strings.Contains(out, "(in 1h") {
		t.Errorf("role list does not show the assignment's end:\n%s", out)
	}
}

// Anonymous and forged requests get 401 from the relay; a flood of tokens
// with unknown key IDs is refused at once and does not hold up a
// legitimate user's kubectl.
func TestRelayRefusesForgedTokensUnderFlood(t *testing.T) {
	ctx := harness.TestContext(t)
	ns := env.Namespace(t, ctx)
	group := unique("grp-flood")
	bind(t, ctx, ns, "Group", group, viewRole)
	legit := user("hal@contoso.example", group)
	if _, err := shared.relay.Connectctl(ctx, "role", "assign", "--assignee", legit.OID, "--role", api.RoleViewer, "--cluster", clusterName); err != nil {
		t.Fatal(err)
	}
	kc := entraKubeconfig(t, mint(t, legit))

	cfg, err := shared.relay.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	get := func(bearer string) (int, api.Status) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, shared.relay.URL+"/clusters/"+clusterName+"/api/v1/namespaces/"+ns+"/pods", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, api.Status{Message: err.Error()}
		}
		defer resp.Body.Close()
		var st api.Status
		json.NewDecoder(resp.Body).Decode(&st)
		return resp.StatusCode, st
	}
	if code, st := get(""); code != 401 || !strings.Contains(st.Message, "no credential") {
		t.Errorf("anonymous: %d %+v", code, st)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	claims := shared.issuer.Claims(user("mallory@contoso.example"))

	const flood = 500
	var wg sync.WaitGroup
	codes := make(chan int, flood)
	start := make(chan struct{})
	for i := range flood {
		tok := forged(t, key, fmt.Sprintf("forged-%d", i), claims)
		wg.Go(func() {
			<-start
			code, _ := get(tok)
			codes <- code
		})
	}
	close(start)
	// While the flood runs, the legitimate user's kubectl succeeds.
	if out := kubectlOK(t, ctx, kc, "get", "pods", "-n", ns, "-o", "name"); strings.Contains(out, "error") {
		t.Errorf("legitimate kubectl during the flood: %s", out)
	}
	wg.Wait()
	close(codes)
	n := map[int]int{}
	for c := range codes {
		n[c]++
	}
	// Every forged token is refused by the relay: 401, or 503 for the few
	// that arrive while the one allowed key refresh is under way and fail.
	if n[401]+n[503] != flood || n[401] == 0 {
		t.Errorf("forged tokens answered %v, want %d refusals (401)", n, flood)
	}
}
