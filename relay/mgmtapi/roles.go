package mgmtapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/relay/access"
	"github.com/clusterconnect/clusterconnect/relay/httpjson"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

func (h *Handler) listRoles(w http.ResponseWriter, r *http.Request) {
	// Cluster roles, then the management roles (their descriptions say so:
	// they are assigned without a cluster), then custom roles.
	out := api.RoleList{Value: []api.Role{}}
	for _, n := range access.BuiltInNames {
		out.Value = append(out.Value, access.BuiltIn[n])
	}
	for _, n := range access.ManagementNames {
		out.Value = append(out.Value, access.Management[n])
	}
	custom, err := h.cfg.Store.ListRoles(r.Context())
	if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	slices.SortFunc(custom, func(a, b *store.RoleDefinition) int { return strings.Compare(a.Name, b.Name) })
	for _, d := range custom {
		out.Value = append(out.Value, access.FromStore(d))
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (h *Handler) getRole(w http.ResponseWriter, r *http.Request) {
	role, err := access.Resolve(r.Context(), h.cfg.Store, r.PathValue("name"))
	if errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("role %q is not defined: built-in roles are %s (on a cluster) and %s (on the relay)",
			r.PathValue("name"), strings.Join(access.BuiltInNames, ", "), strings.Join(access.ManagementNames, ", ")))
		return
	} else if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, role)
}

func (h *Handler) putRole(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if access.IsBuiltIn(name) {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("%s is a built-in role and cannot be changed; define a custom role under another name", name))
		return
	}
	if name == "" || len(name) > 128 || strings.ContainsAny(name, "/\\?#%") {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("role name %q: 1-128 characters without /\\?#%%", name))
		return
	}
	var req api.RoleRequest
	if !decode(w, r, &req, `{"description": "…", "dataActions": ["`+api.ActionPrefix+`pods/read"], "notDataActions": []}`) {
		return
	}
	if len(req.DataActions) == 0 {
		apistatus.Error(w, http.StatusBadRequest, "a role needs at least one data action")
		return
	}
	for _, l := range [][]string{req.DataActions, req.NotDataActions} {
		if err := access.ValidActions(l); err != nil {
			apistatus.Error(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	_, err := h.cfg.Store.GetRole(r.Context(), name)
	existed := err == nil
	d := &store.RoleDefinition{Name: name, Description: req.Description, DataActions: req.DataActions, NotDataActions: req.NotDataActions, UpdatedAt: h.cfg.Now().UTC()}
	if err := h.cfg.Store.PutRole(r.Context(), d); err != nil {
		h.storeUnavailable(w, err)
		return
	}
	code := http.StatusCreated
	if existed {
		code = http.StatusOK
	}
	h.changed()
	httpjson.Write(w, code, access.FromStore(d))
}

func (h *Handler) deleteRole(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if access.IsBuiltIn(name) {
		apistatus.Error(w, http.StatusBadRequest, name+" is a built-in role and cannot be deleted")
		return
	}
	as, err := h.cfg.Store.ListAssignments(r.Context(), "")
	if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	for _, a := range as {
		if a.Role == name {
			where := "cluster " + a.Cluster
			if a.Cluster == "" {
				where = "the relay"
			}
			apistatus.Error(w, http.StatusConflict, fmt.Sprintf("role %q is still assigned (assignment %s on %s): remove its assignments first", name, a.ID, where))
			return
		}
	}
	if err := h.cfg.Store.DeleteRole(r.Context(), name); errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("role %q is not defined", name))
		return
	} else if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	h.changed()
	w.WriteHeader(http.StatusNoContent)
}

// createAssignment grants a role: a management role (Owner, Contributor,
// Reader) on the relay, with neither cluster nor namespace; a cluster role
// (built-in or custom) on a cluster, or on one namespace of it. ExpiresAt,
// when set, must be in the future.
func (h *Handler) createAssignment(w http.ResponseWriter, r *http.Request) {
	var req api.AssignmentRequest
	if !decode(w, r, &req, `{"role": "Viewer", "principalId": "<object id>", "principalType": "User", "cluster": "prod-eu", "namespace": "team-a", "expiresAt": "2030-01-02T15:04:05Z"}`) {
		return
	}
	if req.PrincipalType == "" {
		req.PrincipalType = api.PrincipalUser
	}
	switch {
	case req.PrincipalID == "" || len(req.PrincipalID) > 256:
		apistatus.Error(w, http.StatusBadRequest, "principalId is required: the user's object ID (oid) or the group's ID")
		return
	case req.PrincipalType != api.PrincipalUser && req.PrincipalType != api.PrincipalGroup:
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("principalType %q: want User or Group", req.PrincipalType))
		return
	case req.Namespace != "" && !api.ValidClusterName(req.Namespace):
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("namespace %q is not a valid namespace name", req.Namespace))
		return
	}
	if access.IsManagement(req.Role) {
		if req.Cluster != "" || req.Namespace != "" {
			apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf(`%s is a management role and covers the relay as a whole: assign it without cluster and namespace, e.g. {"role": %q, "principalId": "<object id>"}`, req.Role, req.Role))
			return
		}
	} else {
		if _, err := access.Resolve(r.Context(), h.cfg.Store, req.Role); errors.Is(err, store.ErrNotFound) {
			apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("role %q is not defined: use %s or a custom role on a cluster, or %s without one",
				req.Role, strings.Join(access.BuiltInNames, ", "), strings.Join(access.ManagementNames, ", ")))
			return
		} else if err != nil {
			h.storeUnavailable(w, err)
			return
		}
		if req.Cluster == "" {
			apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf(`%s is a cluster role: name the cluster (and optionally a namespace), e.g. {"role": %q, "principalId": "<object id>", "cluster": "prod-eu"}; only %s are assigned without one`,
				req.Role, req.Role, strings.Join(access.ManagementNames, ", ")))
			return
		}
	}
	now := h.cfg.Now()
	if !req.ExpiresAt.IsZero() && !req.ExpiresAt.After(now) {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf(`expiresAt %s is not in the future: give a later RFC 3339 time, e.g. "expiresAt": %q (8 hours from now), or leave it out for an assignment that does not expire`,
			req.ExpiresAt.Format(time.RFC3339), now.Add(8*time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)))
		return
	}
	a := &store.RoleAssignment{ID: newUID(), Role: req.Role, PrincipalID: req.PrincipalID, PrincipalType: req.PrincipalType,
		Cluster: req.Cluster, Namespace: req.Namespace, CreatedAt: now.UTC().Truncate(time.Second),
		CreatedBy: access.PrincipalRef(caller(r))}
	if !req.ExpiresAt.IsZero() {
		a.ExpiresAt = req.ExpiresAt.UTC()
	}
	// The store checks the cluster in the same transaction: an assignment
	// cannot outlive a cluster deleted meanwhile.
	if err := h.cfg.Store.CreateAssignment(r.Context(), a); errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("cluster %q is not registered with this relay", req.Cluster))
		return
	} else if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	h.log.Info("role assigned", "id", a.ID, "role", a.Role, "principal", a.PrincipalID, "type", a.PrincipalType,
		"cluster", a.Cluster, "namespace", a.Namespace, "expires", a.ExpiresAt, "by", a.CreatedBy)
	h.changed()
	httpjson.Write(w, http.StatusCreated, access.AssignmentFromStore(a))
}

func (h *Handler) listAssignments(w http.ResponseWriter, r *http.Request) {
	as, err := h.cfg.Store.ListAssignments(r.Context(), r.URL.Query().Get("cluster"))
	if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	slices.SortFunc(as, func(a, b *store.RoleAssignment) int { return a.CreatedAt.Compare(b.CreatedAt) })
	out := api.AssignmentList{Value: make([]api.RoleAssignment, 0, len(as))}
	for _, a := range as {
		out.Value = append(out.Value, access.AssignmentFromStore(a))
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (h *Handler) deleteAssignment(w http.ResponseWriter, r *http.Request) {
	if err := h.cfg.Store.DeleteAssignment(r.Context(), r.PathValue("id")); errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("role assignment %q does not exist", r.PathValue("id")))
		return
	} else if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	h.changed()
	w.WriteHeader(http.StatusNoContent)
}
