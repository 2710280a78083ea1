package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// Connectivity statuses, as Azure Arc names them.
const (
	StatusConnecting = "Connecting" // registered, no heartbeat yet
	StatusConnected  = "Connected"  // a heartbeat within OfflineAfter
	StatusOffline    = "Offline"    // was connected, no heartbeat for OfflineAfter
	StatusExpired    = "Expired"    // the cluster's certificate has expired
)

// ConnectedCluster is a cluster as the management API shows it: shaped like
// an ARM resource (Microsoft.Kubernetes/connectedClusters).
type ConnectedCluster struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Type       string            `json:"type"`
	Location   string            `json:"location"`
	Tags       map[string]string `json:"tags"`
	Etag       string            `json:"etag"`
	SystemData SystemData        `json:"systemData"`
	Properties ClusterProperties `json:"properties"`

	// RegistrationToken is present only in the answer to create and
	// registration-token calls: a one-time token for the agent's enrolment.
	RegistrationToken          string    `json:"registrationToken,omitempty"`
	RegistrationTokenExpiresAt time.Time `json:"registrationTokenExpiresAt,omitzero"`
}

// SystemData says when the resource was made.
type SystemData struct {
	CreatedAt      time.Time `json:"createdAt"`
	LastModifiedAt time.Time `json:"lastModifiedAt,omitzero"`
}

// ClusterProperties are the cluster's facts and status.
type ClusterProperties struct {
	ProvisioningState  string `json:"provisioningState"`
	ConnectivityStatus string `json:"connectivityStatus"`
	KubernetesVersion  string `json:"kubernetesVersion,omitempty"`
	AgentVersion       string `json:"agentVersion,omitempty"`
	TotalNodeCount     int    `json:"totalNodeCount"`
	TotalCoreCount     int    `json:"totalCoreCount"`
	Distribution       string `json:"distribution,omitempty"`
	Infrastructure     string `json:"infrastructure,omitempty"`
	// LastConnectivityTime is the last heartbeat.
	LastConnectivityTime time.Time `json:"lastConnectivityTime,omitzero"`
	// ManagedIdentityCertificateExpirationTime is when the newest
	// certificate issued to the cluster expires.
	ManagedIdentityCertificateExpirationTime time.Time `json:"managedIdentityCertificateExpirationTime,omitzero"`
	// Tunnels is the number of agent tunnels up on this relay now.
	Tunnels int    `json:"tunnels"`
	UID     string `json:"uid"`
	// Events are the latest status transitions, newest last (show only).
	Events []store.Event `json:"events,omitempty"`
}

// ClusterList is the answer to a list call.
type ClusterList struct {
	Value []ConnectedCluster `json:"value"`
}

// CreateRequest is the body of a create call.
type CreateRequest struct {
	Name string            `json:"name"`
	Tags map[string]string `json:"tags,omitempty"`
	// TokenTTLSeconds overrides the relay's registration token lifetime.
	TokenTTLSeconds int `json:"tokenTTLSeconds,omitempty"`
}

// TokenRequest is the body of a registration-token call.
type TokenRequest struct {
	TokenTTLSeconds int `json:"tokenTTLSeconds,omitempty"`
}

// PatchRequest is the body of a PATCH: the new tags (replacing the old).
type PatchRequest struct {
	Tags map[string]string `json:"tags"`
}

// HeartbeatRequest is the body of POST /agent/v1/heartbeat; Metadata is sent
// when it changed (and on an agent's first heartbeat).
type HeartbeatRequest struct {
	Metadata *store.Metadata `json:"metadata,omitempty"`
}

// HeartbeatResponse answers a heartbeat.
type HeartbeatResponse struct {
	ConnectivityStatus string `json:"connectivityStatus"`
}

func etag(c *store.Cluster) string { return `"` + strconv.FormatInt(c.Version, 10) + `"` }

// connectivity computes a cluster's status now, with the reason.
func (s *Server) connectivity(c *store.Cluster) (string, string) {
	now := s.now()
	switch {
	case !c.CertNotAfter.IsZero() && now.After(c.CertNotAfter):
		return StatusExpired, "certificate expired on " + c.CertNotAfter.UTC().Format(time.RFC3339) + "; re-register the cluster"
	case c.LastHeartbeat.IsZero():
		return StatusConnecting, "registered; no heartbeat yet"
	case now.Sub(c.LastHeartbeat) <= s.cfg.OfflineAfter:
		return StatusConnected, "heartbeat received"
	default:
		return StatusOffline, fmt.Sprintf("no heartbeat for %s", s.cfg.OfflineAfter)
	}
}

// errNoChange aborts an UpdateCluster that has nothing to write.
var errNoChange = errors.New("no change")

// recordStatus appends an event if the cluster's status changed. It runs
// inside an UpdateCluster.
func (s *Server) recordStatus(c *store.Cluster) bool {
	to, reason := s.connectivity(c)
	if to == c.Status {
		return false
	}
	from := c.Status
	if from == "" {
		from = "None"
	}
	c.AddEvent(store.Event{Time: s.now().UTC(), From: from, To: to, Reason: reason})
	c.Status = to
	s.log.Info("cluster status changed", "cluster", c.Name, "from", from, "to", to, "reason", reason)
	return true
}

// sweep records transitions that happen by the passing of time (Offline,
// Expired) until Shutdown.
func (s *Server) sweep() {
	every := min(s.cfg.OfflineAfter/4, 30*time.Second)
	every = max(every, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.shutdown:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		cs, err := s.cfg.Store.ListClusters(ctx)
		for _, c := range cs {
			if to, _ := s.connectivity(c); to == c.Status {
				continue
			}
			_, _ = s.cfg.Store.UpdateCluster(ctx, c.Name, func(c *store.Cluster) error {
				if !s.recordStatus(c) {
					return errNoChange
				}
				return nil
			})
		}
		cancel()
		if err != nil {
			s.log.Warn("status sweep: store unavailable", "err", err)
		}
	}
}

func (s *Server) view(c *store.Cluster, withEvents bool) ConnectedCluster {
	status, _ := s.connectivity(c)
	tags := c.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	v := ConnectedCluster{
		ID:         "/providers/clusterconnect/connectedClusters/" + c.Name,
		Name:       c.Name,
		Type:       "clusterconnect/connectedClusters",
		Location:   s.cfg.Location,
		Tags:       tags,
		Etag:       etag(c),
		SystemData: SystemData{CreatedAt: c.CreatedAt},
		Properties: ClusterProperties{
			ProvisioningState:                        "Succeeded",
			ConnectivityStatus:                       status,
			KubernetesVersion:                        c.Metadata.KubernetesVersion,
			AgentVersion:                             c.Metadata.AgentVersion,
			TotalNodeCount:                           c.Metadata.TotalNodeCount,
			TotalCoreCount:                           c.Metadata.TotalCoreCount,
			Distribution:                             c.Metadata.Distribution,
			Infrastructure:                           c.Metadata.Infrastructure,
			LastConnectivityTime:                     c.LastHeartbeat,
			ManagedIdentityCertificateExpirationTime: c.CertNotAfter,
			Tunnels:                                  s.Connected(c.Name),
			UID:                                      c.UID,
		},
	}
	if withEvents {
		v.Properties.Events = c.Events
	}
	return v
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// listClusters answers GET /api/v1/clusters[?status=S][&tag=k=v…].
func (s *Server) listClusters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	want := map[string]string{}
	for _, t := range q["tag"] {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("tag filter %q: want tag=key=value", t))
			return
		}
		want[k] = v
	}
	statuses := q["status"]
	for _, st := range statuses {
		if !slices.Contains([]string{StatusConnecting, StatusConnected, StatusOffline, StatusExpired}, st) {
			apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("status filter %q: want Connecting, Connected, Offline or Expired", st))
			return
		}
	}
	cs, err := s.cfg.Store.ListClusters(r.Context())
	if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	out := ClusterList{Value: []ConnectedCluster{}}
	for _, c := range cs {
		v := s.view(c, false)
		if len(statuses) > 0 && !slices.Contains(statuses, v.Properties.ConnectivityStatus) {
			continue
		}
		match := true
		for k, val := range want {
			if v.Tags[k] != val {
				match = false
			}
		}
		if match {
			out.Value = append(out.Value, v)
		}
	}
	slices.SortFunc(out.Value, func(a, b ConnectedCluster) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, out)
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any, example string) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		apistatus.Error(w, http.StatusBadRequest, "body must be JSON like "+example+" (at most 64 KiB): "+err.Error())
		return false
	}
	return true
}

func validTags(w http.ResponseWriter, tags map[string]string) bool {
	if len(tags) > 50 {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("%d tags: at most 50", len(tags)))
		return false
	}
	for k, v := range tags {
		if k == "" || len(k) > 512 || len(v) > 256 || strings.ContainsAny(k, "<>%&\\?/") {
			apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("tag %q: names are 1-512 characters without <>%%&\\?/, values at most 256", k))
			return false
		}
	}
	return true
}

func (s *Server) createCluster(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	if !decodeBody(w, r, &req, `{"name": "prod-eu", "tags": {"env": "prod"}}`) {
		return
	}
	if !ValidClusterName(req.Name) {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("cluster name %q is invalid: use lowercase letters, digits and '-', start and end with a letter or digit, at most 63 characters", req.Name))
		return
	}
	if !validTags(w, req.Tags) {
		return
	}
	ttl, ok := s.tokenTTL(w, req.TokenTTLSeconds)
	if !ok {
		return
	}
	token := randomString(32)
	now := s.now()
	c := &store.Cluster{Name: req.Name, UID: newUID(), CreatedAt: now.UTC().Truncate(time.Second), Tags: req.Tags,
		RegistrationTokenHash: hashSecret(token), RegistrationTokenExpiresAt: now.Add(ttl)}
	c.Status, _ = s.connectivity(c)
	c.AddEvent(store.Event{Time: now.UTC(), From: "None", To: c.Status, Reason: "cluster registered"})
	if err := s.cfg.Store.CreateCluster(r.Context(), c); errors.Is(err, store.ErrExists) {
		apistatus.Error(w, http.StatusConflict, fmt.Sprintf("cluster %q already exists; delete it first or pick another name", req.Name))
		return
	} else if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	s.log.Info("cluster registered", "cluster", c.Name, "uid", c.UID)
	v := s.view(c, true)
	v.RegistrationToken, v.RegistrationTokenExpiresAt = token, c.RegistrationTokenExpiresAt
	w.Header().Set("ETag", v.Etag)
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) tokenTTL(w http.ResponseWriter, seconds int) (time.Duration, bool) {
	if seconds < 0 || seconds > 7*24*3600 {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("tokenTTLSeconds %d: want 1 s to 7 days", seconds))
		return 0, false
	}
	if seconds == 0 {
		return s.cfg.RegistrationTokenTTL, true
	}
	return time.Duration(seconds) * time.Second, true
}

// newRegistrationToken issues a fresh one-time registration token, e.g. to
// re-register a cluster whose certificate expired. Earlier tokens stop working.
func (s *Server) newRegistrationToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if r.ContentLength != 0 && !decodeBody(w, r, &req, `{"tokenTTLSeconds": 3600}`) {
		return
	}
	ttl, ok := s.tokenTTL(w, req.TokenTTLSeconds)
	if !ok {
		return
	}
	token := randomString(32)
	now := s.now()
	c, err := s.cfg.Store.UpdateCluster(r.Context(), r.PathValue("name"), func(c *store.Cluster) error {
		c.RegistrationTokenHash, c.RegistrationTokenExpiresAt, c.RegistrationTokenUsed = hashSecret(token), now.Add(ttl), false
		return nil
	})
	if !s.storeOK(w, r, err) {
		return
	}
	s.log.Info("registration token issued", "cluster", c.Name, "expires", c.RegistrationTokenExpiresAt)
	v := s.view(c, false)
	v.RegistrationToken, v.RegistrationTokenExpiresAt = token, c.RegistrationTokenExpiresAt
	writeJSON(w, http.StatusOK, v)
}

// storeOK answers a store error (404 for an unknown cluster, 412 for a
// stale etag) and reports whether there was none.
func (s *Server) storeOK(w http.ResponseWriter, r *http.Request, err error) bool {
	var pf *preconditionFailed
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrNotFound):
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("cluster %q is not registered with this relay", r.PathValue("name")))
	case errors.As(err, &pf):
		apistatus.Write(w, http.StatusPreconditionFailed, "Conflict", pf.Error())
	default:
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
	}
	return false
}

type preconditionFailed struct{ name, sent, now string }

func (e *preconditionFailed) Error() string {
	return fmt.Sprintf("cluster %s changed since you read it (If-Match %s, etag now %s): get it again and retry", e.name, e.sent, e.now)
}

// checkIfMatch enforces an If-Match header against the cluster's etag.
func checkIfMatch(r *http.Request, c *store.Cluster) error {
	im := r.Header.Get("If-Match")
	if im == "" || im == "*" {
		return nil
	}
	for _, e := range strings.Split(im, ",") {
		if strings.TrimSpace(e) == etag(c) {
			return nil
		}
	}
	return &preconditionFailed{c.Name, im, etag(c)}
}

func (s *Server) getCluster(w http.ResponseWriter, r *http.Request) {
	c, ok := s.lookup(w, r)
	if ok {
		v := s.view(c, true)
		w.Header().Set("ETag", v.Etag)
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *Server) lookup(w http.ResponseWriter, r *http.Request) (*store.Cluster, bool) {
	c, err := s.cfg.Store.GetCluster(r.Context(), r.PathValue("name"))
	if !s.storeOK(w, r, err) {
		return nil, false
	}
	return c, true
}

// patchCluster replaces a cluster's tags, honouring If-Match.
func (s *Server) patchCluster(w http.ResponseWriter, r *http.Request) {
	var req PatchRequest
	if !decodeBody(w, r, &req, `{"tags": {"env": "prod"}}`) || !validTags(w, req.Tags) {
		return
	}
	c, err := s.cfg.Store.UpdateCluster(r.Context(), r.PathValue("name"), func(c *store.Cluster) error {
		if err := checkIfMatch(r, c); err != nil {
			return err
		}
		c.Tags = req.Tags
		return nil
	})
	if !s.storeOK(w, r, err) {
		return
	}
	v := s.view(c, false)
	w.Header().Set("ETag", v.Etag)
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) deleteCluster(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if r.Header.Get("If-Match") != "" {
		c, err := s.cfg.Store.GetCluster(r.Context(), name)
		if err == nil {
			err = checkIfMatch(r, c)
		}
		if !s.storeOK(w, r, err) {
			return
		}
	}
	if err := s.cfg.Store.DeleteCluster(r.Context(), name); !s.storeOK(w, r, err) {
		return
	}
	// The cluster's role assignments go with it.
	if as, err := s.cfg.Store.ListAssignments(r.Context(), name); err == nil {
		for _, a := range as {
			_ = s.cfg.Store.DeleteAssignment(r.Context(), a.ID)
		}
	}
	s.closeTunnels(name, "cluster deleted; its certificates are revoked")
	w.WriteHeader(http.StatusNoContent)
}

// closeTunnels closes every tunnel of a cluster at once.
func (s *Server) closeTunnels(name, why string) {
	s.mu.Lock()
	p := s.pools[name]
	delete(s.pools, name)
	s.mu.Unlock()
	if p != nil {
		p.Close()
	}
	s.log.Info("tunnels closed", "cluster", name, "why", why)
}

// heartbeat records that a cluster's agent is alive, and its metadata.
func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	var req HeartbeatRequest
	if !decodeStrict(w, r, &req) {
		return
	}
	now := s.now()
	_, c, ok := s.agentUpdate(w, r, func(c *store.Cluster) error {
		// Record what time did since the last heartbeat (Offline) before
		// this heartbeat changes it, so no transition goes unrecorded.
		s.recordStatus(c)
		c.LastHeartbeat = now.UTC()
		if req.Metadata != nil {
			md := *req.Metadata
			md.UpdatedAt = now.UTC()
			c.Metadata = md
		}
		s.recordStatus(c)
		return nil
	})
	if !ok {
		return
	}
	st, _ := s.connectivity(c)
	writeJSON(w, http.StatusOK, HeartbeatResponse{ConnectivityStatus: st})
}
