package agentapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// Authenticator decides whether an agent's request speaks for cluster c.
// It runs once per tunnel connection (and per agent API call), never per
// stream, so the hot path does not depend on it. It returns when the
// credential stops being valid; the relay closes the tunnel then.
type Authenticator interface {
	AuthenticateAgent(ctx context.Context, r *http.Request, c *store.Cluster) (expires time.Time, err error)
}

// AuthError is an authentication or authorization failure with the HTTP code
// to answer and a message that says what to do.
type AuthError struct {
	Code int
	// Reason is the Status reason, machine-readable: api.ReasonNoCertificate,
	// ReasonUnknownCA, ReasonCertificateExpired, ReasonCertificateRevoked,
	// ReasonClusterDeleted, ReasonWrongCluster.
	Reason  string
	Message string
}

func (e *AuthError) Error() string { return e.Message }

// CertAuthenticator checks the client certificate the agent got at
// enrolment: issued by the relay's cluster CA, not expired, for this cluster
// (name and UID) and of its current generation (older ones are revoked).
type CertAuthenticator struct {
	CA *clusterca.CA
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// AuthenticateAgent implements Authenticator.
func (a CertAuthenticator) AuthenticateAgent(_ context.Context, r *http.Request, c *store.Cluster) (time.Time, error) {
	id, err := a.identify(r)
	if err != nil {
		return time.Time{}, err
	}
	return id.NotAfter, checkIdentity(id, c)
}

// identify verifies the request's client certificate and returns the
// identity it carries, without looking at the store.
func (a CertAuthenticator) identify(r *http.Request) (clusterca.Identity, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return clusterca.Identity{}, &AuthError{http.StatusUnauthorized, api.ReasonNoCertificate, "no client certificate: an agent authenticates with the certificate it got at enrolment; check the agent's identity Secret"}
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	id, err := a.CA.Verify(r.TLS.PeerCertificates, now())
	switch {
	case errors.Is(err, clusterca.ErrExpired):
		return id, &AuthError{http.StatusUnauthorized, api.ReasonCertificateExpired, fmt.Sprintf("certificate of cluster %s expired on %s: re-register the cluster (`connectctl clusters token %s`, then give the token to the agent)", id.Cluster, id.NotAfter.UTC().Format(time.RFC3339), id.Cluster)}
	case err != nil:
		return id, &AuthError{http.StatusUnauthorized, api.ReasonUnknownCA, fmt.Sprintf("client certificate refused: %v", err)}
	}
	return id, nil
}

func checkIdentity(id clusterca.Identity, c *store.Cluster) error {
	switch {
	case id.Cluster != c.Name:
		return &AuthError{http.StatusForbidden, api.ReasonWrongCluster, fmt.Sprintf("certificate of cluster %s cannot serve cluster %s", id.Cluster, c.Name)}
	case id.UID != c.UID:
		return &AuthError{http.StatusUnauthorized, api.ReasonClusterDeleted, fmt.Sprintf("certificate belongs to an earlier cluster named %s that was deleted: re-register the cluster", c.Name)}
	case id.Generation < c.CertGeneration:
		return &AuthError{http.StatusUnauthorized, api.ReasonCertificateRevoked, fmt.Sprintf("certificate of cluster %s was revoked when the cluster registered again: use the new identity, or re-register", c.Name)}
	case id.Generation > c.CertGeneration:
		return &AuthError{http.StatusUnauthorized, api.ReasonCertificateRevoked, fmt.Sprintf("certificate of cluster %s is of an unknown generation: re-register the cluster", c.Name)}
	}
	return nil
}

func deleted(cluster string) *AuthError {
	return &AuthError{http.StatusUnauthorized, api.ReasonClusterDeleted, fmt.Sprintf("cluster %s was deleted, which revoked its certificates: register it again", cluster)}
}
