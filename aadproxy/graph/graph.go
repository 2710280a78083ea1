// Package graph resolves a user's groups from a Microsoft Graph-style
// endpoint, for tokens with groups overage (users in more than 200 groups,
// whose tokens point to Graph instead of listing the groups).
//
// It calls POST <GraphURL>/v1.0/users/<oid>/getMemberObjects with
// {"securityEnabledOnly": false} and the application's own token, obtained
// with the client-credentials grant from the tenant's token endpoint
// (<IssuerURL>/<tenant>/oauth2/v2.0/token, scope <GraphURL>/.default). The
// application needs the GroupMember.Read.All (or Directory.Read.All)
// application permission. Answers are cached per user for CacheTTL.
package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Defaults of [Config].
const (
	DefaultGraphURL   = "https://graph.microsoft.com"
	DefaultIssuerURL  = "https://login.microsoftonline.com"
	DefaultCacheTTL   = 5 * time.Minute
	DefaultCacheSize  = 10000
	defaultReqTimeout = 15 * time.Second
)

// Config configures a [Resolver]. ClientID and ClientSecret are required.
type Config struct {
	// GraphURL is the Graph base URL; empty means https://graph.microsoft.com.
	GraphURL string
	// IssuerURL is the base of the tenants' token endpoints; empty means
	// https://login.microsoftonline.com.
	IssuerURL string
	// ClientID and ClientSecret are the application's credentials.
	ClientID, ClientSecret string
	// SecurityEnabledOnly limits the answer to security groups; false
	// (the default) returns every group, as the groups claim does when the
	// app is configured for all groups.
	SecurityEnabledOnly bool
	// CacheTTL is how long a user's groups are reused; zero means 5 minutes.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached users; zero means 10000.
	CacheSize int
	// HTTPClient calls the token endpoint and Graph; nil means
	// http.DefaultClient's transport with a 15 s timeout per call.
	HTTPClient *http.Client
	// Logger; nil discards.
	Logger *slog.Logger
}

// Resolver implements token.GroupResolver. It is safe for concurrent use.
type Resolver struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	sources map[string]oauth2.TokenSource // per tenant
	cache   map[string]entry              // tenant/oid → groups
}

type entry struct {
	groups  []string
	expires time.Time
}

// New checks cfg and returns a Resolver.
func New(cfg *Config) (*Resolver, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	c := *cfg
	if c.GraphURL == "" {
		c.GraphURL = DefaultGraphURL
	}
	if c.IssuerURL == "" {
		c.IssuerURL = DefaultIssuerURL
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: defaultReqTimeout}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ClientID == "" || c.ClientSecret == "" {
		return nil, errors.New("graph: the application's client ID and secret are required to resolve groups overage")
	}
	for _, u := range []string{c.GraphURL, c.IssuerURL} {
		if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" {
			return nil, fmt.Errorf("graph: %q: want an https:// URL", u)
		}
	}
	c.GraphURL = strings.TrimSuffix(c.GraphURL, "/")
	c.IssuerURL = strings.TrimSuffix(c.IssuerURL, "/")
	return &Resolver{cfg: c, log: c.Logger, sources: map[string]oauth2.TokenSource{}, cache: map[string]entry{}}, nil
}

// MemberGroups returns the IDs of the groups user oid of tenant is a
// (transitive) member of.
func (r *Resolver) MemberGroups(ctx context.Context, tenant, oid string) ([]string, error) {
	key := tenant + "/" + oid
	r.mu.Lock()
	e, ok := r.cache[key]
	r.mu.Unlock()
	if ok && time.Now().Before(e.expires) {
		return e.groups, nil
	}
	groups, err := r.fetch(ctx, tenant, oid)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= r.cfg.CacheSize {
		r.evictLocked()
	}
	r.cache[key] = entry{groups: groups, expires: time.Now().Add(r.cfg.CacheTTL)}
	return groups, nil
}

// evictLocked drops expired entries, and if none were, an arbitrary tenth.
func (r *Resolver) evictLocked() {
	now := time.Now()
	for k, e := range r.cache {
		if now.After(e.expires) {
			delete(r.cache, k)
		}
	}
	n := r.cfg.CacheSize / 10
	for k := range r.cache {
		if len(r.cache) < r.cfg.CacheSize || n <= 0 {
			break
		}
		delete(r.cache, k)
		n--
	}
}

func (r *Resolver) tokenSource(tenant string) oauth2.TokenSource {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := r.sources[tenant]
	if ts == nil {
		cc := &clientcredentials.Config{
			ClientID:     r.cfg.ClientID,
			ClientSecret: r.cfg.ClientSecret,
			TokenURL:     r.cfg.IssuerURL + "/" + url.PathEscape(tenant) + "/oauth2/v2.0/token",
			Scopes:       []string{r.cfg.GraphURL + "/.default"},
			AuthStyle:    oauth2.AuthStyleInParams,
		}
		// The token source outlives any one request; its HTTP client comes
		// from this context.
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, r.cfg.HTTPClient)
		ts = cc.TokenSource(ctx)
		r.sources[tenant] = ts
	}
	return ts
}

func (r *Resolver) fetch(ctx context.Context, tenant, oid string) ([]string, error) {
	tok, err := r.tokenSource(tenant).Token()
	if err != nil {
		return nil, fmt.Errorf("get an application token for Graph from tenant %s (check the client ID and secret): %w", tenant, err)
	}
	ctx, cancel := context.WithTimeout(ctx, defaultReqTimeout)
	defer cancel()
	body, _ := json.Marshal(map[string]bool{"securityEnabledOnly": r.cfg.SecurityEnabledOnly})
	u := r.cfg.GraphURL + "/v1.0/users/" + url.PathEscape(oid) + "/getMemberObjects"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	tok.SetAuthHeader(req)
	resp, err := r.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("Graph getMemberObjects: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("Graph getMemberObjects: read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var ge struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &ge) == nil && ge.Error.Code != "" {
			msg = ge.Error.Code + ": " + ge.Error.Message
		}
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return nil, fmt.Errorf("Graph getMemberObjects answered HTTP %d: %s", resp.StatusCode, msg)
	}
	var out struct {
		Value []string `json:"value"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("Graph getMemberObjects: the answer is not {\"value\": [...]}: %w", err)
	}
	r.log.Debug("resolved groups overage", "tenant", tenant, "oid", oid, "groups", len(out.Value))
	if out.Value == nil {
		out.Value = []string{}
	}
	return out.Value, nil
}
