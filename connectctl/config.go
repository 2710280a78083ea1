package connectctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Config is connectctl's settings file: which relay, how to trust it, and
// how to sign in to its management API — a token (the admin token or an API
// token) or an Entra (OIDC) login.
type Config struct {
	Relay     string `json:"relay,omitempty"`
	CAFile    string `json:"caFile,omitempty"`
	Token     string `json:"token,omitempty"`
	TokenFile string `json:"tokenFile,omitempty"`
	// Entra, when set, is an Entra (OIDC) login: every management call takes
	// its bearer token from the token cache of these settings, refreshed as
	// needed. Nil means a token login (Token or TokenFile).
	Entra *EntraConfig `json:"entra,omitempty"`
}

// EntraConfig is an Entra ID (or any OIDC issuer's) public client login:
// the settings of `connectctl login --entra` and of get-token.
type EntraConfig struct {
	// IssuerURL is the OIDC issuer, e.g.
	// https://login.microsoftonline.com/<tenant>/v2.0.
	IssuerURL string `json:"issuerURL"`
	// ClientID is the public client application that signs in.
	ClientID string `json:"clientID"`
	// Scopes are requested for the access token, e.g. api://<app>/.default.
	Scopes []string `json:"scopes"`
	// IssuerCAFile is a CA bundle trusted for the issuer besides the system
	// roots; empty means the system roots only.
	IssuerCAFile string `json:"issuerCAFile,omitempty"`
	// CacheDir holds the token cache; empty means the user cache directory
	// (defaultTokenCacheDir).
	CacheDir string `json:"cacheDir,omitempty"`
}

// DefaultConfigPath is $CONNECTCTL_CONFIG, else ~/.config/connectctl/config.yaml.
func DefaultConfigPath() string {
	if p := os.Getenv("CONNECTCTL_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "connectctl", "config.yaml")
}

// LoadConfig reads path; a missing file is an empty config.
func LoadConfig(path string) (*Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &c, nil
	}
	if err != nil {
		return nil, err
	}
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// Save writes the config with owner-only permissions (it holds a token).
func (c *Config) Save(path string) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// token returns the relay token, reading TokenFile when Token is empty.
func (c *Config) token() (string, error) {
	if c.Token != "" {
		return c.Token, nil
	}
	if c.TokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return "", fmt.Errorf("relay token file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// absPath makes a non-empty path absolute, so that the config still works
// when kubectl runs connectctl as an exec plugin from another directory.
func absPath(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	return filepath.Abs(p)
}
