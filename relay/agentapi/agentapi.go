// Package agentapi is the relay's API for the in-cluster agents: the tunnel
// endpoint, enrolment with a one-time registration token, certificate
// renewal, heartbeats with metadata, and checkAccess for guard. Every call but
// enrolment authenticates with the cluster's certificate (mTLS), checked
// against the store once per call or tunnel — never per stream.
package agentapi

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay/access"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/connectivity"
	"github.com/clusterconnect/clusterconnect/relay/dataplane"
	"github.com/clusterconnect/clusterconnect/relay/httpjson"
	"github.com/clusterconnect/clusterconnect/relay/secret"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// Config wires a Handler. Store, ClusterCA, Plane and Status are required.
type Config struct {
	Store     store.Store
	ClusterCA *clusterca.CA
	// CAPEM is the CA bundle agents trust for the relay, sent with every
	// issued certificate.
	CAPEM []byte
	// CertLifetime of cluster certificates; zero means 90 days.
	CertLifetime time.Duration
	// Agents authenticates tunnel connections. Nil means a
	// CertAuthenticator on ClusterCA.
	Agents Authenticator
	Plane  *dataplane.Plane
	Status *connectivity.Tracker
	// Metrics counts refused agents (Errors, label "auth"); nil means none.
	Metrics *tunnel.Metrics
	// HeartbeatWriteInterval bounds the store writes of heartbeats: a
	// heartbeat that changes neither the metadata nor the connectivity
	// status is answered from the stored record, without a write, while the
	// stored LastHeartbeat is younger than this. Zero means
	// DefaultHeartbeatWriteInterval, or half of Status.OfflineAfter when
	// that is shorter; it must be shorter than Status.OfflineAfter.
	HeartbeatWriteInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil means discard.
	Logger *slog.Logger
}

// DefaultHeartbeatWriteInterval is the default of
// Config.HeartbeatWriteInterval: at most two heartbeat writes per cluster
// and minute, whatever the agents' heartbeat interval.
const DefaultHeartbeatWriteInterval = 30 * time.Second

// Handler serves the agent API.
type Handler struct {
	cfg   Config
	certs CertAuthenticator
	log   *slog.Logger
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.ClusterCA == nil || cfg.Plane == nil || cfg.Status == nil {
		return nil, errors.New("agentapi: Store, ClusterCA, Plane and Status are required")
	}
	if cfg.CertLifetime == 0 {
		cfg.CertLifetime = 90 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HeartbeatWriteInterval == 0 {
		cfg.HeartbeatWriteInterval = min(DefaultHeartbeatWriteInterval, cfg.Status.OfflineAfter/2)
	}
	if cfg.HeartbeatWriteInterval <= 0 || cfg.HeartbeatWriteInterval >= cfg.Status.OfflineAfter {
		return nil, fmt.Errorf("agentapi: HeartbeatWriteInterval %s: want more than 0 and less than OfflineAfter (%s)", cfg.HeartbeatWriteInterval, cfg.Status.OfflineAfter)
	}
	certs := CertAuthenticator{CA: cfg.ClusterCA, Now: cfg.Now}
	if cfg.Agents == nil {
		cfg.Agents = certs
	}
	return &Handler{cfg: cfg, certs: certs, log: cfg.Logger}, nil
}

// Register adds the agent API's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.TunnelPathPattern, h.tunnel)
	mux.HandleFunc("POST "+api.EnrollPath, h.enroll)
	mux.HandleFunc("POST "+api.RenewPath, h.renew)
	mux.HandleFunc("POST "+api.HeartbeatPath, h.heartbeat)
	mux.HandleFunc("POST "+api.CheckAccessPath, h.checkAccess)
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return httpjson.Decode(w, r, v, api.MaxAgentBody, "")
}

// decodeCSR decodes an enrol or renew body into req and parses its CSR
// (field csr of req); it has answered 400 when ok is false.
func decodeCSR(w http.ResponseWriter, r *http.Request, req any, csr *string) (*x509.CertificateRequest, bool) {
	if !decode(w, r, req) {
		return nil, false
	}
	c, err := clusterca.ParseCSR([]byte(*csr))
	if err != nil {
		apistatus.Error(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	return c, true
}

// tunnel accepts an agent's tunnel for the cluster in the path.
func (h *Handler) tunnel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	log := h.log.With("cluster", name, "tunnel", r.Header.Get(tunnel.HeaderTunnelIndex), "remote", r.RemoteAddr)
	c, err := h.cfg.Store.GetCluster(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("tunnel refused: cluster not registered")
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("cluster %q is not registered with this relay: register it with `connectctl clusters create %s` and give the agent the registration token it prints", name, name))
		return
	}
	if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "relay store unavailable: "+err.Error())
		return
	}
	expires, err := h.cfg.Agents.AuthenticateAgent(r.Context(), r, c)
	if err != nil {
		h.authFailed(w, name, err)
		return
	}
	// Checked again once the tunnel is in the pool: a re-registration or
	// delete that happened since (and closed the tunnels it knew of) wins.
	valid := func(ctx context.Context) error {
		c, err := h.cfg.Store.GetCluster(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return deleted(name)
		}
		if err != nil {
			return nil // the store is down: the credential was good a moment ago
		}
		_, err = h.cfg.Agents.AuthenticateAgent(ctx, r, c)
		return err
	}
	h.cfg.Plane.Accept(w, r, name, expires, valid, log)
}

// errTokenRefused carries the message for a refused registration token.
type errTokenRefused struct{ msg string }

func (e errTokenRefused) Error() string { return e.msg }

func (h *Handler) enroll(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollRequest
	csr, ok := decodeCSR(w, r, &req, &req.CSR)
	if !ok {
		return
	}
	now := h.cfg.Now()
	name := req.Cluster
	var id clusterca.Identity
	c, err := h.cfg.Store.UpdateCluster(r.Context(), name, func(c *store.Cluster) error {
		switch {
		case c.RegistrationTokenHash == "" || !secret.Matches(req.Token, c.RegistrationTokenHash):
			return errTokenRefused{fmt.Sprintf("registration token is not valid for cluster %s: use the token printed by `connectctl clusters create %s` or `connectctl clusters token %s`", name, name, name)}
		case c.RegistrationTokenUsed:
			return errTokenRefused{fmt.Sprintf("registration token already used: create a new one with `connectctl clusters token %s`", name)}
		case now.After(c.RegistrationTokenExpiresAt):
			return errTokenRefused{fmt.Sprintf("registration token expired on %s: create a new one with `connectctl clusters token %s`", c.RegistrationTokenExpiresAt.UTC().Format(time.RFC3339), name)}
		}
		c.RegistrationTokenUsed = true
		c.CertGeneration++ // revokes certificates of an earlier registration
		id = clusterca.Identity{Cluster: c.Name, UID: c.UID, Generation: c.CertGeneration}
		c.CertNotAfter = now.Add(h.cfg.CertLifetime)
		return nil
	})
	var refused errTokenRefused
	switch {
	case errors.Is(err, store.ErrNotFound):
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("cluster %q is not registered with this relay (was it deleted?): register it with `connectctl clusters create %s`", name, name))
		return
	case errors.As(err, &refused):
		h.log.Warn("enrolment refused", "cluster", name, "reason", refused.msg)
		apistatus.Error(w, http.StatusUnauthorized, refused.msg)
		return
	case err != nil:
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	// A new registration revokes older certificates: close their tunnels.
	if c.CertGeneration > 1 {
		h.cfg.Plane.CloseTunnels(name, "cluster registered again; older certificates are revoked")
	}
	h.issue(w, csr, id, now, "enrolled")
}

func (h *Handler) renew(w http.ResponseWriter, r *http.Request) {
	var req api.RenewRequest
	csr, ok := decodeCSR(w, r, &req, &req.CSR)
	if !ok {
		return
	}
	now := h.cfg.Now()
	id, _, ok := h.agentUpdate(w, r, func(c *store.Cluster) error {
		c.CertNotAfter = now.Add(h.cfg.CertLifetime)
		return nil
	})
	if !ok {
		return
	}
	id.NotBefore, id.NotAfter = time.Time{}, time.Time{}
	h.issue(w, csr, id, now, "renewed")
}

func (h *Handler) issue(w http.ResponseWriter, csr *x509.CertificateRequest, id clusterca.Identity, now time.Time, what string) {
	certPEM, cert, err := h.cfg.ClusterCA.Issue(csr, id, now, h.cfg.CertLifetime)
	if err != nil {
		apistatus.Error(w, http.StatusInternalServerError, "sign certificate: "+err.Error())
		return
	}
	h.log.Info("cluster certificate "+what, "cluster", id.Cluster, "generation", id.Generation, "not_after", cert.NotAfter)
	httpjson.Write(w, http.StatusOK, api.CertificateResponse{Certificate: string(certPEM), CABundle: string(h.cfg.CAPEM),
		NotAfter: cert.NotAfter.UTC().Format(time.RFC3339)})
}

// agentIdentity authenticates an agent API call by its client certificate.
func (h *Handler) agentIdentity(w http.ResponseWriter, r *http.Request) (*store.Cluster, bool) {
	id, err := h.certs.identify(r)
	if err != nil {
		h.authFailed(w, id.Cluster, err)
		return nil, false
	}
	return h.clusterOf(w, r, id)
}

// clusterOf reads the cluster of a verified certificate's identity and
// checks the identity against it. It has answered the request when ok is
// false.
func (h *Handler) clusterOf(w http.ResponseWriter, r *http.Request, id clusterca.Identity) (*store.Cluster, bool) {
	c, err := h.cfg.Store.GetCluster(r.Context(), id.Cluster)
	if errors.Is(err, store.ErrNotFound) {
		h.authFailed(w, id.Cluster, deleted(id.Cluster))
		return nil, false
	}
	if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return nil, false
	}
	if err := checkIdentity(id, c); err != nil {
		h.authFailed(w, c.Name, err)
		return nil, false
	}
	return c, true
}

// agentUpdate authenticates an agent call by its client certificate and,
// in the same store transaction that checks the certificate against the
// cluster, applies update. It has answered the request when ok is false.
func (h *Handler) agentUpdate(w http.ResponseWriter, r *http.Request, update func(*store.Cluster) error) (clusterca.Identity, *store.Cluster, bool) {
	id, err := h.certs.identify(r)
	if err != nil {
		h.authFailed(w, id.Cluster, err)
		return id, nil, false
	}
	c, ok := h.updateAs(w, r, id, update)
	return id, c, ok
}

// updateAs is agentUpdate for a verified certificate's identity.
func (h *Handler) updateAs(w http.ResponseWriter, r *http.Request, id clusterca.Identity, update func(*store.Cluster) error) (*store.Cluster, bool) {
	c, err := h.cfg.Store.UpdateCluster(r.Context(), id.Cluster, func(c *store.Cluster) error {
		if err := checkIdentity(id, c); err != nil {
			return err
		}
		return update(c)
	})
	var ae *AuthError
	switch {
	case errors.Is(err, store.ErrNotFound):
		h.authFailed(w, id.Cluster, deleted(id.Cluster))
		return nil, false
	case errors.As(err, &ae):
		h.authFailed(w, id.Cluster, err)
		return nil, false
	case err != nil:
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return nil, false
	}
	return c, true
}

func (h *Handler) authFailed(w http.ResponseWriter, cluster string, err error) {
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.Errors.WithLabelValues("auth").Inc()
	}
	h.log.Warn("agent authentication failed", "cluster", cluster, "err", err)
	var ae *AuthError
	if errors.As(err, &ae) {
		apistatus.Write(w, ae.Code, metav1.StatusReason(ae.Reason), ae.Message)
		return
	}
	apistatus.Error(w, http.StatusUnauthorized, err.Error())
}

// heartbeat records that a cluster's agent is alive, and its metadata.
// Most heartbeats change nothing but the time: those that come within
// HeartbeatWriteInterval of the stored one are answered from the store,
// after the same identity check, without a write (see heartbeatNeedsWrite).
func (h *Handler) heartbeat(w http.ResponseWriter, r *http.Request) {
	var req api.HeartbeatRequest
	if !decode(w, r, &req) {
		return
	}
	now := h.cfg.Now()
	var md *store.Metadata
	if m := req.Metadata; m != nil {
		md = &store.Metadata{KubernetesVersion: m.KubernetesVersion, AgentVersion: m.AgentVersion,
			TotalNodeCount: m.TotalNodeCount, TotalCoreCount: m.TotalCoreCount, Distribution: m.Distribution,
			Infrastructure: m.Infrastructure, Agents: agentRoles(m.Agents), UpdatedAt: now.UTC()}
	}
	id, err := h.certs.identify(r)
	if err != nil {
		h.authFailed(w, id.Cluster, err)
		return
	}
	c, ok := h.clusterOf(w, r, id)
	if !ok {
		return
	}
	if h.heartbeatNeedsWrite(c, md, now) {
		c, ok = h.updateAs(w, r, id, func(c *store.Cluster) error {
			// Record what time did since the last heartbeat (Offline)
			// before this heartbeat changes it, so no transition goes
			// unrecorded.
			h.cfg.Status.Record(c)
			c.LastHeartbeat = now.UTC()
			if md != nil {
				c.Metadata = *md
			}
			h.cfg.Status.Record(c)
			return nil
		})
		if !ok {
			return
		}
	}
	st, _ := h.cfg.Status.Status(c)
	httpjson.Write(w, http.StatusOK, api.HeartbeatResponse{ConnectivityStatus: st})
}

// heartbeatNeedsWrite reports whether a heartbeat at now that reports md
// (nil: none) must be written to c's record: when the stored heartbeat is
// HeartbeatWriteInterval old or more (or in the future: another replica's
// clock), when the metadata changed, or when the connectivity status would
// change (a transition to record). Otherwise the write would only move
// LastHeartbeat (and Metadata.UpdatedAt) on by less than the interval,
// which is less than OfflineAfter.
func (h *Handler) heartbeatNeedsWrite(c *store.Cluster, md *store.Metadata, now time.Time) bool {
	if age := now.Sub(c.LastHeartbeat); c.LastHeartbeat.IsZero() || age < 0 || age >= h.cfg.HeartbeatWriteInterval {
		return true
	}
	if md != nil && !sameMetadata(*md, c.Metadata) {
		return true
	}
	if st, _ := h.cfg.Status.Status(c); st != c.Status {
		return true
	}
	after := *c
	after.LastHeartbeat = now.UTC()
	st, _ := h.cfg.Status.Status(&after)
	return st != c.Status
}

// sameMetadata compares every field but UpdatedAt.
func sameMetadata(a, b store.Metadata) bool {
	if !slices.Equal(a.Agents, b.Agents) {
		return false
	}
	a.Agents, b.Agents = nil, nil
	a.UpdatedAt, b.UpdatedAt = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

// checkAccess decides actions for a principal from the role assignments of
// the calling cluster (identified by its certificate; only its own).
func (h *Handler) checkAccess(w http.ResponseWriter, r *http.Request) {
	var req api.CheckAccessRequest
	if !decode(w, r, &req) {
		return
	}
	if err := access.CheckRequest(&req); err != nil {
		apistatus.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	c, ok := h.agentIdentity(w, r)
	if !ok {
		return
	}
	out, err := access.Decide(r.Context(), h.cfg.Store, c.Name, &req, h.cfg.Now(), h.log)
	if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	httpjson.Write(w, http.StatusOK, out)
}

// Bounds on the role health a heartbeat may report: the chart deploys a
// handful of roles; anything longer is cut, not refused.
const (
	maxAgentRoles     = 32
	maxAgentRoleField = 1024
)

// agentRoles is the stored form of the reported role health, bounded.
func agentRoles(rs []api.AgentRole) []store.AgentRole {
	if len(rs) > maxAgentRoles {
		rs = rs[:maxAgentRoles]
	}
	cut := func(s string) string {
		if len(s) > maxAgentRoleField {
			return strings.ToValidUTF8(s[:maxAgentRoleField], "")
		}
		return s
	}
	var out []store.AgentRole
	for _, r := range rs {
		out = append(out, store.AgentRole{Role: cut(r.Role), Version: cut(r.Version), Replicas: r.Replicas,
			ReadyReplicas: r.ReadyReplicas, Ready: r.Ready, LastError: cut(r.LastError)})
	}
	return out
}
