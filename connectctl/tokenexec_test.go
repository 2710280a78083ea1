package connectctl

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"

	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/test/oidc"
)

// syncBuffer is a goroutine-safe buffer whose content can be awaited.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	ch  chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	select {
	case b.ch <- struct{}{}:
	default:
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var userCodeRE = regexp.MustCompile(`enter the code (\S+) to authenticate`)

// TestGetTokenDeviceCodeCacheRefresh signs in with the device code against
// the local issuer (a person approves the code), then serves the cached
// token, then refreshes it, and the token verifies as kube-aad-proxy would.
func TestGetTokenDeviceCodeCacheRefresh(t *testing.T) {
	const tenant, server = "tenant-1", "api://clusterconnect-server"
	iss, err := oidc.Start(&oidc.Options{DeviceVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca, iss.CAPEM, 0o600)
	cache := filepath.Join(dir, "cache")
	args := []string{"get-token", "--issuer-url", iss.V2Issuer(tenant), "--client-id", "cli", "--scope", server + "/.default",
		"--issuer-ca-file", ca, "--cache-dir", cache}
	run := func(ctx context.Context, stderr *syncBuffer) (*clientauthv1.ExecCredential, error) {
		var out bytes.Buffer
		cmd := NewCommand(&out)
		cmd.SetErr(stderr)
		cmd.SetArgs(args)
		if err := cmd.ExecuteContext(ctx); err != nil {
			return nil, err
		}
		var cred clientauthv1.ExecCredential
		if err := json.Unmarshal(out.Bytes(), &cred); err != nil {
			return nil, err
		}
		if cred.APIVersion != "client.authentication.k8s.io/v1" || cred.Kind != "ExecCredential" || cred.Status == nil || cred.Status.Token == "" {
			t.Fatalf("not an ExecCredential with a token: %s", out.String())
		}
		return &cred, nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	// 1. Device code: wait for the instructions, approve like a person.
	stderr := &syncBuffer{ch: make(chan struct{}, 1)}
	done := make(chan struct{})
	var cred *clientauthv1.ExecCredential
	go func() {
		defer close(done)
		cred, err = run(ctx, stderr)
	}()
	for m := userCodeRE.FindStringSubmatch(stderr.String()); m == nil; m = userCodeRE.FindStringSubmatch(stderr.String()) {
		select {
		case <-stderr.ch:
		case <-done:
			t.Fatalf("get-token ended before showing a code: %v\n%s", err, stderr.String())
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		if m := userCodeRE.FindStringSubmatch(stderr.String()); m != nil {
			if !iss.Approve(m[1], oidc.User{Tenant: tenant, UPN: "dana@contoso.example", OID: "oid-dana", Groups: []string{"g1"}}) {
				t.Fatalf("code %s was not pending", m[1])
			}
		}
	}
	<-done
	if err != nil {
		t.Fatal(err)
	}
	// The token is what kube-aad-proxy accepts: a v1 token for the server app.
	hc, _ := issuerClient(ca)
	v, err := entra.NewVerifier(&entra.Config{IssuerURL: iss.URL, V1IssuerURL: iss.V1Base(), Tenants: []string{tenant}, Audiences: []string{server}, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(ctx, cred.Status.Token)
	if err != nil || id.Username != "dana@contoso.example" || id.Version != 1 {
		t.Fatalf("verify the device-code token: %+v %v", id, err)
	}
	if fi, err := os.ReadDir(cache); err != nil || len(fi) != 1 {
		t.Fatalf("cache dir: %v %v", fi, err)
	} else if info, _ := fi[0].Info(); info.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode %v, want 0600", info.Mode().Perm())
	}

	// 2. Cached: same token, no new login, no token call.
	before := iss.Stats()
	again, err := run(ctx, &syncBuffer{ch: make(chan struct{}, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if again.Status.Token != cred.Status.Token || iss.Stats().DeviceAuthorizations != before.DeviceAuthorizations {
		t.Error("the second call did not use the cache")
	}

	// 3. Expiring: refreshed with the refresh token, no device code.
	files, _ := filepath.Glob(filepath.Join(cache, "*.json"))
	b, _ := os.ReadFile(files[0])
	var c cachedToken
	json.Unmarshal(b, &c)
	c.Expiry = time.Now().Add(30 * time.Second)
	b, _ = json.Marshal(c)
	os.WriteFile(files[0], b, 0o600)
	refreshed, err := run(ctx, &syncBuffer{ch: make(chan struct{}, 1)})
	if err != nil {
		t.Fatal(err)
	}
	st := iss.Stats()
	if refreshed.Status.Token == cred.Status.Token || st.TokenCalls["refresh_token"] != 1 || st.DeviceAuthorizations != 1 {
		t.Errorf("expiring token: refresh calls %d, device logins %d", st.TokenCalls["refresh_token"], st.DeviceAuthorizations)
	}
}

func TestGetTokenDenied(t *testing.T) {
	iss, err := oidc.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca, iss.CAPEM, 0o600)
	o := EntraConfig{IssuerURL: iss.V2Issuer("t"), ClientID: "cli", Scopes: []string{"api://x/.default"}, IssuerCAFile: ca, CacheDir: dir}
	stderr := &syncBuffer{ch: make(chan struct{}, 1)}
	errc := make(chan error, 1)
	go func() {
		_, err := newEntraSource(o, stderr, nil).Token(t.Context())
		errc <- err
	}()
	for {
		select {
		case err := <-errc:
			if err == nil || !strings.Contains(err.Error(), "access_denied") {
				t.Fatalf("declined login: %v", err)
			}
			return
		case <-stderr.ch:
			if m := userCodeRE.FindStringSubmatch(stderr.String()); m != nil {
				iss.Deny(m[1])
			}
		}
	}
}

func TestGetTokenNeedsFlags(t *testing.T) {
	cmd := NewCommand(&bytes.Buffer{})
	cmd.SetArgs([]string{"get-token"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--issuer-url") {
		t.Fatalf("get-token without flags: %v", err)
	}
}
