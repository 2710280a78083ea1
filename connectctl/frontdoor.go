package connectctl

import (
	"context"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// WhoAmI returns the caller as the relay sees it, with its management roles.
func (c *Client) WhoAmI(ctx context.Context) (*api.WhoAmI, error) {
	var v api.WhoAmI
	err := c.do(ctx, http.MethodGet, api.WhoAmIPath, nil, &v)
	return &v, err
}

// CreateToken creates an API token; the answer holds its secret, shown only
// this once. ttl zero means the relay's default.
func (c *Client) CreateToken(ctx context.Context, name, role string, ttl time.Duration) (*api.APIToken, error) {
	var v api.APIToken
	err := c.do(ctx, http.MethodPost, api.TokensPath, api.APITokenRequest{Name: name, Role: role, ExpiresInSeconds: int64(ttl / time.Second)}, &v)
	return &v, err
}

// Tokens lists the API tokens (without their secrets).
func (c *Client) Tokens(ctx context.Context) ([]api.APIToken, error) {
	var l api.TokenList
	err := c.do(ctx, http.MethodGet, api.TokensPath, nil, &l)
	return l.Value, err
}

// RevokeToken deletes an API token; it stops working at once.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, api.TokenPath(id), nil, nil)
}

// ClientCertificate asks the relay to sign csrPEM: a short-lived relay
// client certificate for the calling principal.
func (c *Client) ClientCertificate(ctx context.Context, csrPEM []byte) (*api.CertificateResponse, error) {
	var v api.CertificateResponse
	err := c.do(ctx, http.MethodPost, api.ClientCertificatePath, api.ClientCertificateRequest{CSR: string(csrPEM)}, &v)
	return &v, err
}

// AuditQuery selects audit records; zero fields select everything.
type AuditQuery struct {
	Cluster string
	// User is a principal's ID or name.
	User  string
	Since time.Time
	// Limit caps the number of records; zero means the relay's default.
	Limit int
}

// Audit reads the relay's audit log, oldest first.
func (c *Client) Audit(ctx context.Context, q AuditQuery) ([]api.AuditRecord, error) {
	v := url.Values{}
	if q.Cluster != "" {
		v.Set("cluster", q.Cluster)
	}
	if q.User != "" {
		v.Set("user", q.User)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	path := api.AuditPath
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var l api.AuditList
	err := c.do(ctx, http.MethodGet, path, nil, &l)
	return l.Value, err
}
