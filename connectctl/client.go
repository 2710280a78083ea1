package connectctl

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/trust"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls the relay's management API.
type Client struct {
	base string
	// bearer returns the token of each call: the admin token, an API token
	// or a user's Entra access token.
	bearer func(context.Context) (string, error)
	hc     *http.Client
}

// NewClient returns a client for the relay at base that authenticates with
// token (the admin token or an API token), trusting caFile (when set)
// besides the system roots.
func NewClient(base, token, caFile string) (*Client, error) {
	return newClient(base, caFile, func(context.Context) (string, error) { return token, nil })
}

// newClient returns a client whose calls take their bearer token from bearer.
func newClient(base, caFile string, bearer func(context.Context) (string, error)) (*Client, error) {
	pool, err := trust.Pool(caFile)
	if err != nil {
		return nil, fmt.Errorf("relay CA file: %w", err)
	}
	return &Client{
		base:   strings.TrimSuffix(base, "/"),
		bearer: bearer,
		hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			Proxy:           http.ProxyFromEnvironment,
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
	}, nil
}

// APIError is a non-2xx answer of the relay, with the message (and the
// Status reason, when it sent one) it gave.
type APIError struct {
	StatusCode int
	Message    string
	// Reason is the Status reason, e.g. api.ReasonForbidden; may be empty.
	Reason string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("relay answered %d: %s", e.StatusCode, e.Message)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return c.doWith(ctx, method, path, in, out, "")
}

func (c *Client) doWith(ctx context.Context, method, path string, in, out any, ifMatch string) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	token, err := c.bearer(ctx)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the relay at %s (check --relay and that it runs): %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var st api.Status
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &st) == nil && st.Message != "" {
			msg = st.Message
		}
		return &APIError{StatusCode: resp.StatusCode, Message: msg, Reason: st.Reason}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = b
		return nil
	default:
		return json.Unmarshal(b, out)
	}
}

// CreateCluster registers a cluster; the answer holds its one-time
// registration token. ttl zero means the relay's default.
func (c *Client) CreateCluster(ctx context.Context, name string, tags map[string]string, ttl time.Duration) (*api.ConnectedCluster, error) {
	var v api.ConnectedCluster
	err := c.do(ctx, http.MethodPost, api.ClustersPath, api.CreateRequest{Name: name, Tags: tags, TokenTTLSeconds: int(ttl.Seconds())}, &v)
	return &v, err
}

// UpdateTags replaces a cluster's tags; a non-empty etag is sent as If-Match.
func (c *Client) UpdateTags(ctx context.Context, name string, tags map[string]string, etag string) (*api.ConnectedCluster, error) {
	var v api.ConnectedCluster
	err := c.doWith(ctx, http.MethodPatch, api.ClusterPath(name), api.PatchRequest{Tags: tags}, &v, etag)
	return &v, err
}

// NewRegistrationToken issues a fresh registration token for a cluster (to
// re-register it); earlier tokens stop working.
func (c *Client) NewRegistrationToken(ctx context.Context, name string, ttl time.Duration) (*api.ConnectedCluster, error) {
	var v api.ConnectedCluster
	err := c.do(ctx, http.MethodPost, api.RegistrationTokenPath(name), api.TokenRequest{TokenTTLSeconds: int(ttl.Seconds())}, &v)
	return &v, err
}

// GetCluster returns one cluster.
func (c *Client) GetCluster(ctx context.Context, name string) (*api.ConnectedCluster, error) {
	var v api.ConnectedCluster
	err := c.do(ctx, http.MethodGet, api.ClusterPath(name), nil, &v)
	return &v, err
}

// ListClusters returns the clusters, optionally filtered by status and tags
// ("key=value").
func (c *Client) ListClusters(ctx context.Context, status string, tags []string) ([]api.ConnectedCluster, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	for _, t := range tags {
		q.Add("tag", t)
	}
	path := api.ClustersPath
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var l api.ClusterList
	err := c.do(ctx, http.MethodGet, path, nil, &l)
	return l.Value, err
}

// DeleteCluster removes a cluster and closes its tunnels.
func (c *Client) DeleteCluster(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, api.ClusterPath(name), nil, nil)
}

// Kubeconfig returns the relay-issued kubeconfig (YAML) of a cluster.
func (c *Client) Kubeconfig(ctx context.Context, name string) ([]byte, error) {
	var b []byte
	err := c.do(ctx, http.MethodGet, api.KubeconfigPath(name), nil, &b)
	return b, err
}
