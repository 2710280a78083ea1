package connectctl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
)

// certMinValidity: a cached relay client certificate is handed out again
// while at least this much of its validity is left; kubectl runs the plugin
// again when the credential expires.
const certMinValidity = 5 * time.Minute

// kubeCredentialCmd is token mode's kubectl exec credential plugin: the
// Kubernetes token for the cluster's apiserver, and a short-lived relay
// client certificate that proves the caller's relay login.
func kubeCredentialCmd(g *globals) *cobra.Command {
	var cluster, tokenFile, cacheDir string
	c := &cobra.Command{
		Use:   "kube-credential --cluster NAME [--config F] [--token-file F]",
		Short: "Print an ExecCredential with the cluster's token and a relay client certificate (kubectl exec credential plugin, token mode)",
		Long: `Prints a client.authentication.k8s.io/v1 ExecCredential for kubectl with

  token: the bearer token for the cluster's API server (e.g. a service-account
  token), from $` + kubeTokenEnv + ` or --token-file; the relay passes it on;

  clientCertificateData/clientKeyData: a short-lived relay client certificate.
  connectctl makes an ECDSA P-256 key locally, sends a CSR to the relay signed
  in as your relay login (the config's token, or its Entra login), and caches
  key and certificate (mode 0600) per relay and login until less than 5 minutes
  of validity remain.

The credential expires with the certificate (or, with an Entra login, with the
access token that obtained it, if sooner), so kubectl runs the plugin again in
time. connectctl kubeconfig NAME --token… writes a kubeconfig user that runs it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cluster == "" {
				return errors.New("kube-credential: --cluster is required")
			}
			token, err := kubeToken(tokenFile, cluster)
			if err != nil {
				return err
			}
			l, _, err := g.login(cmd)
			if err != nil {
				return err
			}
			if cacheDir == "" {
				cacheDir = defaultClientCertDir()
			}
			cc, err := l.clientCertificate(cmd.Context(), cacheDir, g.now, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return writeExecCredential(cmd.OutOrStdout(), &clientauthv1.ExecCredentialStatus{
				Token:                 token,
				ClientCertificateData: cc.Certificate,
				ClientKeyData:         cc.Key,
			}, cc.validUntil())
		},
	}
	f := c.Flags()
	f.StringVar(&cluster, "cluster", "", "the cluster (required)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the cluster's token (default: $"+kubeTokenEnv+")")
	f.StringVar(&cacheDir, "cache-dir", "", "client certificate cache directory (default "+defaultClientCertDir()+")")
	return c
}

// kubeToken is the Kubernetes token: --token-file, else $CONNECTCTL_KUBE_TOKEN.
func kubeToken(file, cluster string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("--token-file %s is empty", file)
	}
	if t := strings.TrimSpace(os.Getenv(kubeTokenEnv)); t != "" {
		return t, nil
	}
	return "", fmt.Errorf("no Kubernetes token for cluster %q: set %s (the kubeconfig user's exec env; `connectctl kubeconfig %s --token-file F` writes one) or pass --token-file",
		cluster, kubeTokenEnv, cluster)
}

func defaultClientCertDir() string { return filepath.Join(cacheBase(), "clientcerts") }

// cacheEnv overrides connectctl's cache directory (tokens, client
// certificates); by default it is <user cache dir>/connectctl.
const cacheEnv = "CONNECTCTL_CACHE_DIR"

func cacheBase() string {
	if d := os.Getenv(cacheEnv); d != "" {
		return d
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "connectctl")
}

// clientCertCachePath names the cache file of l's certificate for its relay.
func clientCertCachePath(dir string, l *relayLogin) string {
	h := sha256.Sum256([]byte(strings.TrimSuffix(l.relay, "/") + "\n" + l.identity()))
	return filepath.Join(dir, hex.EncodeToString(h[:12])+".json")
}

// cachedClientCert is the cache file's content.
type cachedClientCert struct {
	Relay string `json:"relay"`
	// Certificate is the PEM leaf, then any intermediates.
	Certificate string `json:"certificate"`
	// Key is the PEM PKCS #8 private key.
	Key      string    `json:"key"`
	NotAfter time.Time `json:"notAfter"`
	// LoginExpiry is when the Entra access token that obtained the
	// certificate expires; zero for a token login.
	LoginExpiry time.Time `json:"loginExpiry,omitzero"`
}

// validUntil is NotAfter capped by LoginExpiry.
func (c *cachedClientCert) validUntil() time.Time {
	if !c.LoginExpiry.IsZero() && c.LoginExpiry.Before(c.NotAfter) {
		return c.LoginExpiry
	}
	return c.NotAfter
}

// readClientCert returns the cached certificate at path if its key matches
// and it is still valid for certMinValidity at now.
func readClientCert(path string, now time.Time) *cachedClientCert {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var c cachedClientCert
	if json.Unmarshal(b, &c) != nil {
		return nil
	}
	pair, err := tls.X509KeyPair([]byte(c.Certificate), []byte(c.Key))
	if err != nil || pair.Leaf == nil {
		return nil
	}
	c.NotAfter = pair.Leaf.NotAfter
	if c.validUntil().Sub(now) < certMinValidity {
		return nil
	}
	return &c
}

// certClient is the client that asks for a certificate, and when the login
// it signs in with expires (zero: unknown, a token login).
func (l *relayLogin) certClient(ctx context.Context) (*Client, time.Time, error) {
	if l.entra == nil {
		cl, err := l.client()
		return cl, time.Time{}, err
	}
	// The certificate is usable only as long as this token, so ask for one
	// that outlives the reuse margin by a token's own margin.
	l.entra.minValid = certMinValidity + tokenMinValidity
	tok, err := l.entra.Token(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	cl, err := NewClient(l.relay, tok.AccessToken, l.caFile)
	return cl, tok.Expiry, err
}

// clientCertificate returns a relay client certificate for l, from the
// cache in dir or, when that has none valid for certMinValidity, issued by
// the relay for a new key (and then cached).
func (l *relayLogin) clientCertificate(ctx context.Context, dir string, now func() time.Time, errOut io.Writer) (*cachedClientCert, error) {
	path := clientCertCachePath(dir, l)
	if c := readClientCert(path, now()); c != nil {
		return c, nil
	}
	cl, loginExpiry, err := l.certClient(ctx)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	// The relay names the certificate after the verified caller; the CSR
	// only carries the key.
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	resp, err := cl.ClientCertificate(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) && (ae.StatusCode == http.StatusUnauthorized || ae.StatusCode == http.StatusForbidden) {
			return nil, fmt.Errorf("the relay refused a client certificate for your login (%d): %s (check `connectctl whoami`, or sign in again with `connectctl login`): %w",
				ae.StatusCode, ae.Message, err)
		}
		return nil, fmt.Errorf("relay client certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	c := &cachedClientCert{
		Relay:       l.relay,
		Certificate: resp.Certificate,
		Key:         string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})),
		LoginExpiry: loginExpiry,
	}
	pair, err := tls.X509KeyPair([]byte(c.Certificate), []byte(c.Key))
	if err != nil || pair.Leaf == nil {
		return nil, fmt.Errorf("the relay answered with a certificate that does not fit the key sent: %v", err)
	}
	c.NotAfter = pair.Leaf.NotAfter
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	if err := writePrivate(path, b); err != nil {
		fmt.Fprintf(errOut, "connectctl: could not cache the client certificate (the next call asks the relay again): %v\n", err)
	}
	return c, nil
}
