// Package mgmtapi is the relay's management API: connected clusters (ARM
// shaped, with etags and tags), registration tokens, relay kubeconfigs, role
// definitions and role assignments. Callers authenticate with the relay's
// admin token.
package mgmtapi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/relay/connectivity"
	"github.com/clusterconnect/clusterconnect/relay/dataplane"
	"github.com/clusterconnect/clusterconnect/relay/httpjson"
	"github.com/clusterconnect/clusterconnect/relay/secret"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// Config wires a Handler. Store, AdminToken, Plane and Status are required.
type Config struct {
	Store store.Store
	// ExternalURL is how kubectl and agents reach this relay, e.g.
	// https://relay.example:8443; it goes into issued kubeconfigs.
	ExternalURL string
	// CAPEM is the CA bundle clients trust for the relay's serving
	// certificate; it goes into issued kubeconfigs. Empty means the system roots.
	CAPEM []byte
	// AdminToken authenticates the management API (Bearer).
	AdminToken string
	// RegistrationTokenTTL is how long a registration token can be used;
	// zero means 1 hour.
	RegistrationTokenTTL time.Duration
	// Location is the relay's region, shown as each cluster's location.
	// Empty means "local".
	Location string
	Plane    *dataplane.Plane
	Status   *connectivity.Tracker
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil means discard.
	Logger *slog.Logger
}

// Handler serves the management API.
type Handler struct {
	cfg       Config
	adminHash string
	log       *slog.Logger
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Plane == nil || cfg.Status == nil {
		return nil, errors.New("mgmtapi: Store, Plane and Status are required")
	}
	if cfg.AdminToken == "" {
		return nil, errors.New("relay: an admin token is required for the management API")
	}
	if cfg.RegistrationTokenTTL == 0 {
		cfg.RegistrationTokenTTL = time.Hour
	}
	if cfg.Location == "" {
		cfg.Location = "local"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, adminHash: secret.Hash(cfg.AdminToken), log: cfg.Logger}, nil
}

// Register adds the management API's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	const cluster = api.ClustersPath + "/{name}"
	for _, r := range []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"GET " + api.ClustersPath, h.listClusters},
		{"POST " + api.ClustersPath, h.createCluster},
		{"GET " + cluster, h.getCluster},
		{"DELETE " + cluster, h.deleteCluster},
		{"PATCH " + cluster, h.patchCluster},
		{"POST " + cluster + "/registration-token", h.newRegistrationToken},
		{"GET " + cluster + "/kubeconfig", h.kubeconfig},
		{"GET " + api.RoleDefinitionsPath, h.listRoles},
		{"GET " + api.RoleDefinitionsPath + "/{name}", h.getRole},
		{"PUT " + api.RoleDefinitionsPath + "/{name}", h.putRole},
		{"DELETE " + api.RoleDefinitionsPath + "/{name}", h.deleteRole},
		{"GET " + api.RoleAssignmentsPath, h.listAssignments},
		{"POST " + api.RoleAssignmentsPath, h.createAssignment},
		{"DELETE " + api.RoleAssignmentsPath + "/{id}", h.deleteAssignment},
	} {
		mux.HandleFunc(r.pattern, h.admin(r.h))
	}
}

// admin wraps a management API handler with the admin token check.
func (h *Handler) admin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t, ok := secret.Bearer(r)
		if !ok || !secret.Matches(t, h.adminHash) {
			apistatus.Error(w, http.StatusUnauthorized, "the management API needs the relay's admin token as Authorization: Bearer <token> (connectctl reads it from its config or CONNECTCTL_RELAY_TOKEN)")
			return
		}
		next(w, r)
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any, example string) bool {
	return httpjson.Decode(w, r, v, api.MaxManagementBody, example)
}

func storeUnavailable(w http.ResponseWriter, err error) {
	apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
}

func newUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b)
	return strings.Join([]string{s[:8], s[8:12], s[12:16], s[16:20], s[20:]}, "-")
}
