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
	out := api.RoleList{Value: []api.Role{}}
	for _, n := range access.BuiltInNames {
		out.Value = append(out.Value, access.BuiltIn[n])
	}
	custom, err := h.cfg.Store.ListRoles(r.Context())
	if err != nil {
		storeUnavailable(w, err)
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
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("role %q is not defined: built-in roles are Viewer, Writer, Admin and Cluster Admin", r.PathValue("name")))
		return
	} else if err != nil {
		storeUnavailable(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, role)
}

func (h *Handler) putRole(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := access.BuiltIn[name]; ok {
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
		storeUnavailable(w, err)
		return
	}
	code := http.StatusCreated
	if existed {
		code = http.StatusOK
	}
	httpjson.Write(w, code, access.FromStore(d))
}

func (h *Handler) deleteRole(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := access.BuiltIn[name]; ok {
		apistatus.Error(w, http.StatusBadRequest, name+" is a built-in role and cannot be deleted")
		return
	}
	as, err := h.cfg.Store.ListAssignments(r.Context(), "")
	if err != nil {
		storeUnavailable(w, err)
		return
	}
	for _, a := range as {
		if a.Role == name {
			apistatus.Error(w, http.StatusConflict, fmt.Sprintf("role %q is still assigned (assignment %s on cluster %s): remove its assignments first", name, a.ID, a.Cluster))
			return
		}
	}
	if err := h.cfg.Store.DeleteRole(r.Context(), name); errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("role %q is not defined", name))
		return
	} else if err != nil {
		storeUnavailable(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) createAssignment(w http.ResponseWriter, r *http.Request) {
	var req api.AssignmentRequest
	if !decode(w, r, &req, `{"role": "Viewer", "principalId": "<object id>", "principalType": "User", "cluster": "prod-eu", "namespace": "team-a"}`) {
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
	if _, err := access.Resolve(r.Context(), h.cfg.Store, req.Role); errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("role %q is not defined: use Viewer, Writer, Admin, Cluster Admin or a custom role", req.Role))
		return
	} else if err != nil {
		storeUnavailable(w, err)
		return
	}
	if _, err := h.cfg.Store.GetCluster(r.Context(), req.Cluster); errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("cluster %q is not registered with this relay", req.Cluster))
		return
	}
	a := &store.RoleAssignment{ID: newUID(), Role: req.Role, PrincipalID: req.PrincipalID, PrincipalType: req.PrincipalType,
		Cluster: req.Cluster, Namespace: req.Namespace, CreatedAt: h.cfg.Now().UTC().Truncate(time.Second)}
	if err := h.cfg.Store.CreateAssignment(r.Context(), a); err != nil {
		storeUnavailable(w, err)
		return
	}
	h.log.Info("role assigned", "id", a.ID, "role", a.Role, "principal", a.PrincipalID, "type", a.PrincipalType, "cluster", a.Cluster, "namespace", a.Namespace)
	httpjson.Write(w, http.StatusCreated, access.AssignmentFromStore(a))
}

func (h *Handler) listAssignments(w http.ResponseWriter, r *http.Request) {
	as, err := h.cfg.Store.ListAssignments(r.Context(), r.URL.Query().Get("cluster"))
	if err != nil {
		storeUnavailable(w, err)
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
		storeUnavailable(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
