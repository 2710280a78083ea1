package connectctl

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/trust"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

// getTokenOptions are the flags of `connectctl get-token`.
type getTokenOptions struct {
	issuerURL, clientID, issuerCAFile, cacheDir string
	scopes                                      []string
}

// getTokenCmd is a kubectl exec credential plugin: it prints a
// client.authentication.k8s.io/v1 ExecCredential with an Entra (OIDC)
// access token for kube-aad-proxy, from its cache, by a refresh-token
// grant, or by a device-code login, as kubelogin does for AKS.
func getTokenCmd() *cobra.Command {
	o := &getTokenOptions{}
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
        interactiveMode: IfAvailable

Tokens are cached per issuer, client and scope (mode 0600) and refreshed with
the refresh token; only when that fails does it start a device-code login,
whose instructions go to standard error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := c.Flags()
	f.StringVar(&o.issuerURL, "issuer-url", "", "OIDC issuer, e.g. https://login.microsoftonline.com/<tenant>/v2.0 (required)")
	f.StringVar(&o.clientID, "client-id", "", "the public client application that signs in (required)")
	f.StringSliceVar(&o.scopes, "scope", nil, "scopes to request, e.g. api://<server app>/.default (required; repeatable)")
	f.StringVar(&o.issuerCAFile, "issuer-ca-file", "", "CA bundle to trust for the issuer, besides the system roots")
	f.StringVar(&o.cacheDir, "cache-dir", defaultTokenCacheDir(), "token cache directory")
	return c
}

func defaultTokenCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "connectctl", "tokens")
}

func (o *getTokenOptions) run(ctx context.Context, out, errOut io.Writer) error {
	if o.issuerURL == "" || o.clientID == "" || len(o.scopes) == 0 {
		return errors.New("get-token: --issuer-url, --client-id and --scope are required")
	}
	hc, err := issuerClient(o.issuerCAFile)
	if err != nil {
		return err
	}
	ctx = context.WithValue(oidc.ClientContext(ctx, hc), oauth2.HTTPClient, hc)
	cachePath := filepath.Join(o.cacheDir, o.cacheKey()+".json")
	tok, _ := readCachedToken(cachePath)
	if tok == nil || tok.AccessToken == "" || time.Until(tok.Expiry) < tokenMinValidity {
		if tok, err = o.fetch(ctx, tok, errOut); err != nil {
			return err
		}
		if err := writeCachedToken(cachePath, tok); err != nil {
			fmt.Fprintf(errOut, "connectctl: could not cache the token (the next call signs in again): %v\n", err)
		}
	}
	exp := metav1.NewTime(tok.Expiry)
	cred := clientauthv1.ExecCredential{
		TypeMeta: metav1.TypeMeta{APIVersion: clientauthv1.SchemeGroupVersion.String(), Kind: "ExecCredential"},
		Status:   &clientauthv1.ExecCredentialStatus{Token: tok.AccessToken, ExpirationTimestamp: &exp},
	}
	return json.NewEncoder(out).Encode(cred)
}

// cacheKey names the cache file of this issuer, client and scope set.
func (o *getTokenOptions) cacheKey() string {
	h := sha256.Sum256([]byte(o.issuerURL + "\n" + o.clientID + "\n" + strings.Join(o.scopes, " ")))
	return hex.EncodeToString(h[:12])
}

// fetch refreshes old if it has a refresh token, and signs in with the
// device code otherwise (or if refreshing fails).
func (o *getTokenOptions) fetch(ctx context.Context, old *oauth2.Token, errOut io.Writer) (*oauth2.Token, error) {
	p, err := oidc.NewProvider(ctx, o.issuerURL)
	if err != nil {
		return nil, fmt.Errorf("get-token: discover %s (check --issuer-url): %w", o.issuerURL, err)
	}
	cfg := &oauth2.Config{ClientID: o.clientID, Endpoint: p.Endpoint(), Scopes: o.scopes}
	cfg.Endpoint.AuthStyle = oauth2.AuthStyleInParams // a public client: no secret
	if old != nil && old.RefreshToken != "" {
		old.Expiry = time.Now().Add(-time.Second) // force the refresh
		tok, err := cfg.TokenSource(ctx, old).Token()
		if err == nil {
			return tok, nil
		}
		fmt.Fprintf(errOut, "connectctl: refreshing the token failed, signing in again: %v\n", err)
	}
	if cfg.Endpoint.DeviceAuthURL == "" {
		return nil, fmt.Errorf("get-token: issuer %s has no device_authorization_endpoint", o.issuerURL)
	}
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("get-token: start the device-code login: %w", err)
	}
	fmt.Fprintf(errOut, "To sign in, use a web browser to open the page %s and enter the code %s to authenticate.\n", da.VerificationURI, da.UserCode)
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		return nil, fmt.Errorf("get-token: device-code login: %w", err)
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
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(cachedToken{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, Expiry: t.Expiry})
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".token-*")
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
