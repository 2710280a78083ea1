// Package mgmtapi is the relay's management API: connected clusters (ARM
// shaped, with etags and tags), registration tokens, relay kubeconfigs, role
// definitions and role assignments, API tokens, relay client certificates
// and the audit log. Every call is authenticated (admin token, API token or
// Entra token) and authorized by the caller's management role.
package mgmtapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/relay/access"
	"github.com/clusterconnect/clusterconnect/relay/audit"
	"github.com/clusterconnect/clusterconnect/relay/authn"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/connectivity"
	"github.com/clusterconnect/clusterconnect/relay/dataplane"
	"github.com/clusterconnect/clusterconnect/relay/httpjson"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// Config wires a Handler. Store, Authn, ClusterCA, Plane and Status are required.
type Config struct {
	Store store.Store
	// ExternalURL is how kubectl and agents reach this relay, e.g.
	// https://relay.example:8443; it goes into issued kubeconfigs.
	ExternalURL string
	// CAPEM is the CA bundle clients trust for the relay's serving
	// certificate; it goes into issued kubeconfigs. Empty means the system roots.
	CAPEM []byte
	// HostSuffix, when set, makes issued kubeconfigs name the cluster by
	// TLS server name <cluster>.<HostSuffix> (see frontdoor.Config).
	HostSuffix string
	// Authn authenticates every call.
	Authn *authn.Authenticator
	// ClusterCA signs relay client certificates.
	ClusterCA *clusterca.CA
	// ClientCertLifetime of relay client certificates; zero means 1 hour.
	ClientCertLifetime time.Duration
	// TokenTTL is the default lifetime of API tokens (zero: 24 h), and
	// MaxTokenTTL the longest allowed (zero: 90 days).
	TokenTTL, MaxTokenTTL time.Duration
	// RegistrationTokenTTL is how long a registration token can be used;
	// zero means 1 hour.
	RegistrationTokenTTL time.Duration
	// Location is the relay's region, shown as each cluster's location.
	// Empty means "local".
	Location string
	Plane    *dataplane.Plane
	Status   *connectivity.Tracker
	// Audit is read back by GET AuditPath; nil answers an empty list.
	Audit *audit.Log
	// Changed is called after role assignments or clusters change, so that
	// cached admission decisions are dropped; nil means nothing to tell.
	Changed func()
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil means discard.
	Logger *slog.Logger
}

// Handler serves the management API.
type Handler struct {
	cfg Config
	log *slog.Logger
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Plane == nil || cfg.Status == nil || cfg.Authn == nil || cfg.ClusterCA == nil {
		return nil, errors.New("mgmtapi: Store, Authn, ClusterCA, Plane and Status are required")
	}
	if cfg.RegistrationTokenTTL == 0 {
		cfg.RegistrationTokenTTL = time.Hour
	}
	if cfg.ClientCertLifetime == 0 {
		cfg.ClientCertLifetime = time.Hour
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 24 * time.Hour
	}
	if cfg.MaxTokenTTL == 0 {
		cfg.MaxTokenTTL = 90 * 24 * time.Hour
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
	return &Handler{cfg: cfg, log: cfg.Logger}, nil
}

// changed tells the front door that assignments or clusters changed.
func (h *Handler) changed() {
	if h.cfg.Changed != nil {
		h.cfg.Changed()
	}
}

// Register adds the management API's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	const cluster = api.ClustersPath + "/{name}"
	for _, r := range []struct {
		pattern string
		op      access.Op
		h       http.HandlerFunc
	}{
		{"GET " + api.ClustersPath, access.OpRead, h.listClusters},
		{"POST " + api.ClustersPath, access.OpWriteClusters, h.createCluster},
		{"GET " + cluster, access.OpRead, h.getCluster},
		{"DELETE " + cluster, access.OpWriteClusters, h.deleteCluster},
		{"PATCH " + cluster, access.OpWriteClusters, h.patchCluster},
		{"POST " + cluster + "/registration-token", access.OpWriteClusters, h.newRegistrationToken},
		{"GET " + cluster + "/kubeconfig", "", h.kubeconfig},
		{"GET " + api.RoleDefinitionsPath, access.OpRead, h.listRoles},
		{"GET " + api.RoleDefinitionsPath + "/{name}", access.OpRead, h.getRole},
		{"PUT " + api.RoleDefinitionsPath + "/{name}", access.OpAssignRoles, h.putRole},
		{"DELETE " + api.RoleDefinitionsPath + "/{name}", access.OpAssignRoles, h.deleteRole},
		{"GET " + api.RoleAssignmentsPath, access.OpRead, h.listAssignments},
		{"POST " + api.RoleAssignmentsPath, access.OpAssignRoles, h.createAssignment},
		{"DELETE " + api.RoleAssignmentsPath + "/{id}", access.OpAssignRoles, h.deleteAssignment},
		{"GET " + api.TokensPath, access.OpRead, h.listTokens},
		{"POST " + api.TokensPath, access.OpWriteTokens, h.createToken},
		{"GET " + api.TokensPath + "/{id}", access.OpRead, h.getToken},
		{"DELETE " + api.TokensPath + "/{id}", access.OpWriteTokens, h.revokeToken},
		{"GET " + api.AuditPath, access.OpReadAudit, h.readAudit},
	} {
		mux.HandleFunc(r.pattern, h.authorize(r.op, r.h))
	}
	// Any signed-in principal may ask who it is and get a client
	// certificate; what the certificate admits is decided per cluster.
	mux.HandleFunc("GET "+api.WhoAmIPath, h.authorize(access.OpWhoAmI, h.whoami))
	mux.HandleFunc("POST "+api.ClientCertificatePath, h.authorize(access.OpClientCertificate, h.clientCertificate))
}

type callerKey struct{}

// principal is the authenticated caller of a request and its management roles.
type principal struct {
	api.Principal
	roles   []string
	expires time.Time // when the credential ends; zero: never (admin token)
}

// caller is the authenticated principal of a management call.
func caller(r *http.Request) api.Principal {
	p, _ := r.Context().Value(callerKey{}).(principal)
	return p.Principal
}

func callerRoles(r *http.Request) []string {
	p, _ := r.Context().Value(callerKey{}).(principal)
	return p.roles
}

// authorize authenticates a management call and checks that the caller's
// management roles allow op ("" = any authenticated caller).
func (h *Handler) authorize(op access.Op, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		res, aerr := h.cfg.Authn.Management(r.Context(), r)
		if aerr != nil {
			apistatus.Write(w, aerr.Code, metav1.StatusReason(aerr.Reason), aerr.Message)
			return
		}
		roles, err := access.ManagementRoles(r.Context(), h.cfg.Store, res.Principal, h.cfg.Now())
		if err != nil {
			h.storeUnavailable(w, err)
			return
		}
		if op != "" && !access.MgmtAllows(roles, op) {
			held := "no management role"
			if len(roles) > 0 {
				held = "management roles " + strings.Join(roles, ", ")
			}
			hint := fmt.Sprintf("ask an Owner (connectctl role assign --assignee %s --role Contributor)", res.Principal.ID)
			if res.Principal.Kind == api.PrincipalKindToken {
				hint = "use an API token with a higher role (connectctl tokens create --role …, by a caller who holds it)"
			}
			apistatus.Write(w, http.StatusForbidden, api.ReasonForbidden, fmt.Sprintf(
				"%s %s (%s) has %s, which does not allow %s %s (%s): %s",
				res.Principal.Kind, res.Principal.ID, res.Principal.Name, held, r.Method, r.URL.Path, op, hint))
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, principal{res.Principal, roles, res.Expires})))
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any, example string) bool {
	return httpjson.Decode(w, r, v, api.MaxManagementBody, example)
}

func (h *Handler) storeUnavailable(w http.ResponseWriter, err error) {
	// The reason goes to the relay's log, not to the caller.
	h.log.Warn("store unavailable", "err", err)
	apistatus.Error(w, http.StatusServiceUnavailable, "the relay's store is unavailable: retry; if it persists, see the relay's log")
}

func newUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b)
	return strings.Join([]string{s[:8], s[8:12], s[12:16], s[16:20], s[20:]}, "-")
}
