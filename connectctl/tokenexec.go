package connectctl

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/trust"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spf13/cobra"
	"golang.org/x/oauth2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
)

// tokenMinValidity is how long a cached token must still be valid to be
// handed out; kubectl may use it for a long-running request.
const tokenMinValidity = 2 * time.Minute

// getTokenCmd is a kubectl exec credential plugin: it prints a
// client.authentication.k8s.io/v1 ExecCredential with an Entra (OIDC)
// access token for kube-aad-proxy, from its cache, by a refresh-token
// grant, or by a device-code login, as kubelogin does for AKS.
func getTokenCmd(g *globals) *cobra.Command {
	o := &EntraConfig{}
	c := &cobra.Command{
		Use:   "get-token",
		Short: "Print an ExecCredential with an Entra ID token for kube-aad-proxy (kubectl exec credential plugin)",
		Long: `Obtains an access token for the cluster's server application from Entra ID (or
any OIDC issuer with a device authorization endpoint) and prints it as a
client.authentication.k8s.io/v1 ExecCredential, for kubectl's exec plugin:

  users:
  - name: entra
    user:
      exec:
        apiVersion: client.authentication.k8s.io/v1
        command: connectctl
        args: [get-token, --issuer-url, https://login.microsoftonline.com/<tenant>/v2.0,
               --client-id, <public client app ID>, --scope, api://<server app>/.default]
        interactiveMode: Never

(connectctl kubeconfig NAME --entra writes this user from the settings of
connectctl login --entra.) Tokens are cached per issuer, client and scope
(mode 0600) and refreshed with the refresh token; only when that fails does it
start a device-code login, whose instructions go to standard error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate("get-token"); err != nil {
				return err
			}
			tok, err := newEntraSource(*o, cmd.ErrOrStderr(), g.now).Token(cmd.Context())
			if err != nil {
				return err
			}
			return writeExecCredential(cmd.OutOrStdout(), &clientauthv1.ExecCredentialStatus{Token: tok.AccessToken}, tok.Expiry)
		},
	}
	o.addFlags(c, true)
	return c
}

// addFlags adds the Entra login flags; required says so in their help.
func (o *EntraConfig) addFlags(c *cobra.Command, required bool) {
	req := ""
	if required {
		req = " (required)"
	}
	f := c.Flags()
	f.StringVar(&o.IssuerURL, "issuer-url", "", "OIDC issuer, e.g. https://login.microsoftonline.com/<tenant>/v2.0"+req)
	f.StringVar(&o.ClientID, "client-id", "", "the public client application that signs in"+req)
	f.StringSliceVar(&o.Scopes, "scope", nil, "scopes to request, e.g. api://<server app>/.default (repeatable)"+req)
	f.StringVar(&o.IssuerCAFile, "issuer-ca-file", "", "CA bundle to trust for the issuer, besides the system roots")
	f.StringVar(&o.CacheDir, "cache-dir", "", "token cache directory (default "+defaultTokenCacheDir()+")")
}

func (o *EntraConfig) validate(what string) error {
	if o.IssuerURL == "" || o.ClientID == "" || len(o.Scopes) == 0 {
		return fmt.Errorf("%s: --issuer-url, --client-id and --scope are required", what)
	}
	return nil
}

// writeExecCredential prints st as a client.authentication.k8s.io/v1
// ExecCredential that kubectl uses until exp.
func writeExecCredential(w io.Writer, st *clientauthv1.ExecCredentialStatus, exp time.Time) error {
	ts := metav1.NewTime(exp)
	st.ExpirationTimestamp = &ts
	return json.NewEncoder(w).Encode(clientauthv1.ExecCredential{
		TypeMeta: metav1.TypeMeta{APIVersion: clientauthv1.SchemeGroupVersion.String(), Kind: "ExecCredential"},
		Status:   st,
	})
}

func defaultTokenCacheDir() string { return filepath.Join(cacheBase(), "tokens") }

// entraSource hands out access tokens of one Entra login (issuer, client,
// scopes): from memory, from its cache file, by a refresh-token grant, or by
// a device-code login whose instructions go to prompt. It is safe for
// concurrent use; a device-code login blocks the other callers.
type entraSource struct {
	cfg    EntraConfig
	prompt io.Writer
	now    func() time.Time
	// minValid is how long a token must still be valid to be handed out;
	// zero means tokenMinValidity.
	minValid time.Duration

	mu   sync.Mutex
	last *oauth2.Token
}

// newEntraSource returns a source for cfg; nil now means time.Now.
func newEntraSource(cfg EntraConfig, prompt io.Writer, now func() time.Time) *entraSource {
	if now == nil {
		now = time.Now
	}
	return &entraSource{cfg: cfg, prompt: prompt, now: now}
}

func (s *entraSource) valid(t *oauth2.Token) bool {
	minValid := s.minValid
	if minValid == 0 {
		minValid = tokenMinValidity
	}
	return t != nil && t.AccessToken != "" && t.Expiry.Sub(s.now()) >= minValid
}

// Token returns an access token valid for at least minValid.
func (s *entraSource) Token(ctx context.Context) (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.valid(s.last) {
		return s.last, nil
	}
	hc, err := issuerClient(s.cfg.IssuerCAFile)
	if err != nil {
		return nil, err
	}
	ctx = context.WithValue(oidc.ClientContext(ctx, hc), oauth2.HTTPClient, hc)
	path := s.cachePath()
	tok, _ := readCachedToken(path)
	if !s.valid(tok) {
		if tok, err = s.fetch(ctx, tok); err != nil {
			return nil, err
		}
		if err := writeCachedToken(path, tok); err != nil {
			fmt.Fprintf(s.prompt, "connectctl: could not cache the token (the next call signs in again): %v\n", err)
		}
	}
	s.last = tok
	return tok, nil
}

// SignIn signs in afresh with the device code, whatever the cache holds
// (connectctl login: possibly as someone else), and caches the token.
func (s *entraSource) SignIn(ctx context.Context) (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hc, err := issuerClient(s.cfg.IssuerCAFile)
	if err != nil {
		return nil, err
	}
	ctx = context.WithValue(oidc.ClientContext(ctx, hc), oauth2.HTTPClient, hc)
	tok, err := s.fetch(ctx, nil)
	if err != nil {
		return nil, err
	}
	if err := writeCachedToken(s.cachePath(), tok); err != nil {
		fmt.Fprintf(s.prompt, "connectctl: could not cache the token (the next call signs in again): %v\n", err)
	}
	s.last = tok
	return tok, nil
}

func (s *entraSource) cachePath() string {
	dir := s.cfg.CacheDir
	if dir == "" {
		dir = defaultTokenCacheDir()
	}
	return filepath.Join(dir, s.cfg.cacheKey()+".json")
}

// cacheKey names the cache file of this issuer, client and scope set.
func (o *EntraConfig) cacheKey() string {
	h := sha256.Sum256([]byte(o.IssuerURL + "\n" + o.ClientID + "\n" + strings.Join(o.Scopes, " ")))
	return hex.EncodeToString(h[:12])
}

// fetch refreshes old if it has a refresh token, and signs in with the
// device code otherwise (or if refreshing fails).
func (s *entraSource) fetch(ctx context.Context, old *oauth2.Token) (*oauth2.Token, error) {
	o := &s.cfg
	p, err := oidc.NewProvider(ctx, o.IssuerURL)
	if err != nil {
		return nil, fmt.Errorf("Entra sign-in: discover %s (check --issuer-url): %w", o.IssuerURL, err)
	}
	cfg := &oauth2.Config{ClientID: o.ClientID, Endpoint: p.Endpoint(), Scopes: o.Scopes}
	cfg.Endpoint.AuthStyle = oauth2.AuthStyleInParams // a public client: no secret
	if old != nil && old.RefreshToken != "" {
		old.Expiry = time.Now().Add(-time.Second) // force the refresh (oauth2 uses the real clock)
		tok, err := cfg.TokenSource(ctx, old).Token()
		if err == nil {
			return tok, nil
		}
		fmt.Fprintf(s.prompt, "connectctl: refreshing the token failed, signing in again: %v\n", err)
	}
	if cfg.Endpoint.DeviceAuthURL == "" {
		return nil, fmt.Errorf("Entra sign-in: issuer %s has no device_authorization_endpoint", o.IssuerURL)
	}
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("Entra sign-in: start the device-code login: %w", err)
	}
	fmt.Fprintf(s.prompt, "To sign in, use a web browser to open the page %s and enter the code %s to authenticate.\n", da.VerificationURI, da.UserCode)
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		return nil, fmt.Errorf("Entra sign-in: device-code login: %w", err)
	}
	return tok, nil
}

func issuerClient(caFile string) (*http.Client, error) {
	pool, err := trust.Pool(caFile)
	if err != nil {
		return nil, fmt.Errorf("--issuer-ca-file: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// cachedToken is the cache file's content.
type cachedToken struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"`
}

func readCachedToken(path string) (*oauth2.Token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c cachedToken
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: c.AccessToken, RefreshToken: c.RefreshToken, Expiry: c.Expiry, TokenType: "Bearer"}, nil
}

// writeCachedToken writes atomically with owner-only permissions.
func writeCachedToken(path string, t *oauth2.Token) error {
	b, err := json.Marshal(cachedToken{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, Expiry: t.Expiry})
	if err != nil {
		return err
	}
	return writePrivate(path, b)
}

// writePrivate writes b to path atomically (a temporary file renamed over
// it) with owner-only permissions, making the directory (0700) if needed.
func writePrivate(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
