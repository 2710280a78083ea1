package relay

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// EnrollRequest is the body of POST /agent/v1/enroll.
type EnrollRequest struct {
	Cluster string `json:"cluster"`
	Token   string `json:"token"`
	CSR     string `json:"csr"`
}

// RenewRequest is the body of POST /agent/v1/renew (over mTLS).
type RenewRequest struct {
	CSR string `json:"csr"`
}

// CertificateResponse answers enrol and renew.
type CertificateResponse struct {
	Certificate string    `json:"certificate"`
	CABundle    string    `json:"caBundle"`
	NotAfter    time.Time `json:"notAfter"`
}

const maxAgentBody = 64 << 10

func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAgentBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		apistatus.Error(w, http.StatusBadRequest, "request body must be JSON of the documented shape (at most 64 KiB): "+err.Error())
		return false
	}
	return true
}

func (s *Server) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// errTokenRefused carries the message for a refused registration token.
type errTokenRefused struct{ msg string }

func (e errTokenRefused) Error() string { return e.msg }

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	var req EnrollRequest
	if !decodeStrict(w, r, &req) {
		return
	}
	csr, err := clusterca.ParseCSR([]byte(req.CSR))
	if err != nil {
		apistatus.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	now := s.now()
	name := req.Cluster
	var id clusterca.Identity
	c, err := s.cfg.Store.UpdateCluster(r.Context(), name, func(c *store.Cluster) error {
		switch {
		case c.RegistrationTokenHash == "" || !secretMatches(req.Token, c.RegistrationTokenHash):
			return errTokenRefused{fmt.Sprintf("registration token is not valid for cluster %s: use the token printed by `connectctl clusters create %s` or `connectctl clusters token %s`", name, name, name)}
		case c.RegistrationTokenUsed:
			return errTokenRefused{fmt.Sprintf("registration token already used: create a new one with `connectctl clusters token %s`", name)}
		case now.After(c.RegistrationTokenExpiresAt):
			return errTokenRefused{fmt.Sprintf("registration token expired on %s: create a new one with `connectctl clusters token %s`", c.RegistrationTokenExpiresAt.UTC().Format(time.RFC3339), name)}
		}
		c.RegistrationTokenUsed = true
		c.CertGeneration++ // revokes certificates of an earlier registration
		id = clusterca.Identity{Cluster: c.Name, UID: c.UID, Generation: c.CertGeneration}
		c.CertNotAfter = now.Add(s.cfg.CertLifetime)
		return nil
	})
	var refused errTokenRefused
	switch {
	case errors.Is(err, store.ErrNotFound):
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("cluster %q is not registered with this relay (was it deleted?): register it with `connectctl clusters create %s`", name, name))
		return
	case errors.As(err, &refused):
		s.log.Warn("enrolment refused", "cluster", name, "reason", refused.msg)
		apistatus.Error(w, http.StatusUnauthorized, refused.msg)
		return
	case err != nil:
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	// A new registration revokes older certificates: close their tunnels.
	if c.CertGeneration > 1 {
		s.closeTunnels(name, "cluster registered again; older certificates are revoked")
	}
	s.issue(w, csr, id, now, "enrolled")
}

func (s *Server) renew(w http.ResponseWriter, r *http.Request) {
	var req RenewRequest
	if !decodeStrict(w, r, &req) {
		return
	}
	csr, err := clusterca.ParseCSR([]byte(req.CSR))
	if err != nil {
		apistatus.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	now := s.now()
	id, _, ok := s.agentUpdate(w, r, func(c *store.Cluster) error {
		c.CertNotAfter = now.Add(s.cfg.CertLifetime)
		return nil
	})
	if !ok {
		return
	}
	id.NotBefore, id.NotAfter = time.Time{}, time.Time{}
	s.issue(w, csr, id, now, "renewed")
}

func (s *Server) issue(w http.ResponseWriter, csr *x509.CertificateRequest, id clusterca.Identity, now time.Time, what string) {
	certPEM, cert, err := s.cfg.ClusterCA.Issue(csr, id, now, s.cfg.CertLifetime)
	if err != nil {
		apistatus.Error(w, http.StatusInternalServerError, "sign certificate: "+err.Error())
		return
	}
	s.log.Info("cluster certificate "+what, "cluster", id.Cluster, "generation", id.Generation, "not_after", cert.NotAfter)
	writeJSON(w, http.StatusOK, CertificateResponse{Certificate: string(certPEM), CABundle: string(s.cfg.CAPEM), NotAfter: cert.NotAfter})
}

// agentIdentity authenticates an agent API call by its client certificate.
func (s *Server) agentIdentity(w http.ResponseWriter, r *http.Request) (clusterca.Identity, *store.Cluster, bool) {
	id, err := s.certs.identify(r)
	if err != nil {
		s.authFailed(w, id.Cluster, err)
		return id, nil, false
	}
	c, err := s.cfg.Store.GetCluster(r.Context(), id.Cluster)
	if errors.Is(err, store.ErrNotFound) {
		s.authFailed(w, id.Cluster, &AuthError{http.StatusUnauthorized, "ClusterDeleted", fmt.Sprintf("cluster %s was deleted, which revoked its certificates: register it again", id.Cluster)})
		return id, nil, false
	}
	if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return id, nil, false
	}
	if err := checkIdentity(id, c); err != nil {
		s.authFailed(w, c.Name, err)
		return id, nil, false
	}
	return id, c, true
}

// agentUpdate authenticates an agent call by its client certificate and,
// in the same store transaction that checks the certificate against the
// cluster, applies update. It has answered the request when ok is false.
func (s *Server) agentUpdate(w http.ResponseWriter, r *http.Request, update func(*store.Cluster) error) (clusterca.Identity, *store.Cluster, bool) {
	id, err := s.certs.identify(r)
	if err != nil {
		s.authFailed(w, id.Cluster, err)
		return id, nil, false
	}
	c, err := s.cfg.Store.UpdateCluster(r.Context(), id.Cluster, func(c *store.Cluster) error {
		if err := checkIdentity(id, c); err != nil {
			return err
		}
		return update(c)
	})
	var ae *AuthError
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.authFailed(w, id.Cluster, &AuthError{http.StatusUnauthorized, "ClusterDeleted", fmt.Sprintf("cluster %s was deleted, which revoked its certificates: register it again", id.Cluster)})
		return id, nil, false
	case errors.As(err, &ae):
		s.authFailed(w, id.Cluster, err)
		return id, nil, false
	case err != nil:
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return id, nil, false
	}
	return id, c, true
}

func (s *Server) authFailed(w http.ResponseWriter, cluster string, err error) {
	s.metrics.Errors.WithLabelValues("auth").Inc()
	s.log.Warn("agent authentication failed", "cluster", cluster, "err", err)
	var ae *AuthError
	if errors.As(err, &ae) {
		apistatus.Write(w, ae.Code, metav1.StatusReason(ae.Reason), ae.Message)
		return
	}
	apistatus.Error(w, http.StatusUnauthorized, err.Error())
}
