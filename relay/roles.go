package relay

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// ActionPrefix starts every data action, as in Azure Arc.
const ActionPrefix = "Microsoft.Kubernetes/connectedClusters/"

// Role is a role definition as the API shows it.
type Role struct {
	Name           string   `json:"name"`
	Description    string   `json:"description,omitempty"`
	BuiltIn        bool     `json:"builtIn"`
	DataActions    []string `json:"dataActions"`
	NotDataActions []string `json:"notDataActions,omitempty"`
}

func actions(prefix string, items ...string) []string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = prefix + s
	}
	return out
}

// Workload resources the built-in roles cover (core, then named groups).
var (
	coreRead = []string{"configmaps", "endpoints", "events", "limitranges", "namespaces", "persistentvolumeclaims",
		"pods", "pods/log", "pods/status", "replicationcontrollers", "resourcequotas", "serviceaccounts", "services"}
	groupsAll = []string{"apps", "autoscaling", "batch", "extensions", "networking.k8s.io", "policy", "discovery.k8s.io", "events.k8s.io"}
	coreWrite = []string{"configmaps", "endpoints", "events", "persistentvolumeclaims", "pods", "replicationcontrollers",
		"secrets", "serviceaccounts", "services"}
)

func viewerActions() []string {
	var a []string
	for _, r := range coreRead {
		a = append(a, ActionPrefix+r+"/read")
	}
	for _, g := range groupsAll {
		a = append(a, ActionPrefix+g+"/*/read")
	}
	return a
}

func writerActions() []string {
	a := viewerActions()
	for _, r := range coreWrite {
		a = append(a, ActionPrefix+r+"/*")
	}
	for _, g := range groupsAll {
		a = append(a, ActionPrefix+g+"/*")
	}
	return a
}

// BuiltInRoles are Arc's four roles for connected clusters.
var BuiltInRoles = map[string]Role{
	"Viewer": {Name: "Viewer", BuiltIn: true, Description: "Read most objects in a namespace; not secrets, roles or role bindings.",
		DataActions: viewerActions()},
	"Writer": {Name: "Writer", BuiltIn: true, Description: "Read and write most objects in a namespace, secrets included; not roles or role bindings.",
		DataActions: writerActions()},
	"Admin": {Name: "Admin", BuiltIn: true, Description: "Writer plus roles and role bindings; meant to be granted within a namespace.",
		DataActions: append(writerActions(), actions(ActionPrefix, "rbac.authorization.k8s.io/roles/*", "rbac.authorization.k8s.io/rolebindings/*",
			"authorization.k8s.io/localsubjectaccessreviews/write")...)},
	"Cluster Admin": {Name: "Cluster Admin", BuiltIn: true, Description: "Everything, in every namespace and at cluster scope.",
		DataActions: []string{ActionPrefix + "*"}},
}

// matchAction reports whether action matches pattern, where * matches any
// run of characters ("/" included): ".../apps/*/read" matches
// ".../apps/deployments/read".
func matchAction(pattern, action string) bool {
	p, a := 0, 0
	star, mark := -1, 0
	for a < len(action) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, a
			p++
		case p < len(pattern) && strings.EqualFold(pattern[p:p+1], action[a:a+1]):
			p++
			a++
		case star >= 0:
			p = star + 1
			mark++
			a = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Allows reports whether the role allows action: a data action matches and
// no not-data-action does.
func (r Role) Allows(action string) bool {
	for _, n := range r.NotDataActions {
		if matchAction(n, action) {
			return false
		}
	}
	for _, d := range r.DataActions {
		if matchAction(d, action) {
			return true
		}
	}
	return false
}

func roleFromStore(d *store.RoleDefinition) Role {
	return Role{Name: d.Name, Description: d.Description, DataActions: d.DataActions, NotDataActions: d.NotDataActions}
}

func (s *Server) role(r *http.Request, name string) (Role, error) {
	if b, ok := BuiltInRoles[name]; ok {
		return b, nil
	}
	d, err := s.cfg.Store.GetRole(r.Context(), name)
	if err != nil {
		return Role{}, err
	}
	return roleFromStore(d), nil
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request) {
	out := []Role{}
	for _, n := range []string{"Viewer", "Writer", "Admin", "Cluster Admin"} {
		out = append(out, BuiltInRoles[n])
	}
	custom, err := s.cfg.Store.ListRoles(r.Context())
	if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	slices.SortFunc(custom, func(a, b *store.RoleDefinition) int { return strings.Compare(a.Name, b.Name) })
	for _, d := range custom {
		out = append(out, roleFromStore(d))
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": out})
}

func (s *Server) getRole(w http.ResponseWriter, r *http.Request) {
	role, err := s.role(r, r.PathValue("name"))
	if errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("role %q is not defined: built-in roles are Viewer, Writer, Admin and Cluster Admin", r.PathValue("name")))
		return
	} else if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, role)
}

// RoleRequest is the body of PUT /api/v1/roledefinitions/{name}.
type RoleRequest struct {
	Description    string   `json:"description,omitempty"`
	DataActions    []string `json:"dataActions"`
	NotDataActions []string `json:"notDataActions,omitempty"`
}

func validActions(list []string) error {
	if len(list) > 200 {
		return fmt.Errorf("%d actions: at most 200", len(list))
	}
	for _, a := range list {
		if !strings.HasPrefix(a, ActionPrefix) || len(a) > 512 || strings.ContainsAny(a, " \t\n") {
			return fmt.Errorf("action %q: must start with %s, e.g. %spods/read or %sapps/deployments/*", a, ActionPrefix, ActionPrefix, ActionPrefix)
		}
	}
	return nil
}

func (s *Server) putRole(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := BuiltInRoles[name]; ok {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("%s is a built-in role and cannot be changed; define a custom role under another name", name))
		return
	}
	if name == "" || len(name) > 128 || strings.ContainsAny(name, "/\\?#%") {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("role name %q: 1-128 characters without /\\?#%%", name))
		return
	}
	var req RoleRequest
	if !decodeBody(w, r, &req, `{"description": "…", "dataActions": ["`+ActionPrefix+`pods/read"], "notDataActions": []}`) {
		return
	}
	if len(req.DataActions) == 0 {
		apistatus.Error(w, http.StatusBadRequest, "a role needs at least one data action")
		return
	}
	for _, l := range [][]string{req.DataActions, req.NotDataActions} {
		if err := validActions(l); err != nil {
			apistatus.Error(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	_, err := s.cfg.Store.GetRole(r.Context(), name)
	existed := err == nil
	d := &store.RoleDefinition{Name: name, Description: req.Description, DataActions: req.DataActions, NotDataActions: req.NotDataActions, UpdatedAt: s.now().UTC()}
	if err := s.cfg.Store.PutRole(r.Context(), d); err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	code := http.StatusCreated
	if existed {
		code = http.StatusOK
	}
	writeJSON(w, code, roleFromStore(d))
}

func (s *Server) deleteRole(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := BuiltInRoles[name]; ok {
		apistatus.Error(w, http.StatusBadRequest, name+" is a built-in role and cannot be deleted")
		return
	}
	as, err := s.cfg.Store.ListAssignments(r.Context(), "")
	if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	for _, a := range as {
		if a.Role == name {
			apistatus.Error(w, http.StatusConflict, fmt.Sprintf("role %q is still assigned (assignment %s on cluster %s): remove its assignments first", name, a.ID, a.Cluster))
			return
		}
	}
	if err := s.cfg.Store.DeleteRole(r.Context(), name); errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("role %q is not defined", name))
		return
	} else if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// AssignmentRequest is the body of POST /api/v1/roleassignments.
type AssignmentRequest struct {
	Role          string `json:"role"`
	PrincipalID   string `json:"principalId"`
	PrincipalType string `json:"principalType,omitempty"` // User (default) or Group
	Cluster       string `json:"cluster"`
	Namespace     string `json:"namespace,omitempty"`
}

func (s *Server) createAssignment(w http.ResponseWriter, r *http.Request) {
	var req AssignmentRequest
	if !decodeBody(w, r, &req, `{"role": "Viewer", "principalId": "<object id>", "principalType": "User", "cluster": "prod-eu", "namespace": "team-a"}`) {
		return
	}
	if req.PrincipalType == "" {
		req.PrincipalType = "User"
	}
	switch {
	case req.PrincipalID == "" || len(req.PrincipalID) > 256:
		apistatus.Error(w, http.StatusBadRequest, "principalId is required: the user's object ID (oid) or the group's ID")
		return
	case req.PrincipalType != "User" && req.PrincipalType != "Group":
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("principalType %q: want User or Group", req.PrincipalType))
		return
	case req.Namespace != "" && !ValidClusterName(req.Namespace):
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("namespace %q is not a valid namespace name", req.Namespace))
		return
	}
	if _, err := s.role(r, req.Role); errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("role %q is not defined: use Viewer, Writer, Admin, Cluster Admin or a custom role", req.Role))
		return
	} else if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	if _, err := s.cfg.Store.GetCluster(r.Context(), req.Cluster); errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("cluster %q is not registered with this relay", req.Cluster))
		return
	}
	a := &store.RoleAssignment{ID: newUID(), Role: req.Role, PrincipalID: req.PrincipalID, PrincipalType: req.PrincipalType,
		Cluster: req.Cluster, Namespace: req.Namespace, CreatedAt: s.now().UTC().Truncate(time.Second)}
	if err := s.cfg.Store.CreateAssignment(r.Context(), a); err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	s.log.Info("role assigned", "id", a.ID, "role", a.Role, "principal", a.PrincipalID, "type", a.PrincipalType, "cluster", a.Cluster, "namespace", a.Namespace)
	writeJSON(w, http.StatusCreated, a)
}

func (s *Server) listAssignments(w http.ResponseWriter, r *http.Request) {
	as, err := s.cfg.Store.ListAssignments(r.Context(), r.URL.Query().Get("cluster"))
	if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	slices.SortFunc(as, func(a, b *store.RoleAssignment) int { return a.CreatedAt.Compare(b.CreatedAt) })
	if as == nil {
		as = []*store.RoleAssignment{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": as})
}

func (s *Server) deleteAssignment(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Store.DeleteAssignment(r.Context(), r.PathValue("id")); errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("role assignment %q does not exist", r.PathValue("id")))
		return
	} else if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// CheckAccessRequest is the body of POST /agent/v1/checkaccess.
type CheckAccessRequest struct {
	Subject struct {
		OID    string   `json:"oid"`
		Groups []string `json:"groups,omitempty"`
	} `json:"subject"`
	Actions []string `json:"actions"`
	// Namespace is the scope; empty means the cluster scope.
	Namespace string `json:"namespace,omitempty"`
}

// Decision answers one action.
type Decision struct {
	Action  string `json:"action"`
	Allowed bool   `json:"allowed"`
	Reason  string `json:"reason"`
}

// CheckAccessResponse answers checkAccess.
type CheckAccessResponse struct {
	Decisions []Decision `json:"decisions"`
}

// checkAccess decides actions for a principal from the role assignments of
// the calling cluster (identified by its certificate; only its own).
func (s *Server) checkAccess(w http.ResponseWriter, r *http.Request) {
	var req CheckAccessRequest
	if !decodeStrict(w, r, &req) {
		return
	}
	if req.Subject.OID == "" || len(req.Actions) == 0 || len(req.Actions) > 100 || len(req.Subject.Groups) > 5000 {
		apistatus.Error(w, http.StatusBadRequest, "checkAccess needs subject.oid and 1-100 actions (and at most 5000 groups)")
		return
	}
	_, c, ok := s.agentIdentity(w, r)
	if !ok {
		return
	}
	as, err := s.cfg.Store.ListAssignments(r.Context(), c.Name)
	if err != nil {
		apistatus.Error(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	groups := map[string]bool{}
	for _, g := range req.Subject.Groups {
		groups[g] = true
	}
	type grant struct {
		a    *store.RoleAssignment
		role Role
	}
	var grants []grant
	for _, a := range as {
		if a.Namespace != "" && a.Namespace != req.Namespace {
			continue // a namespace assignment covers only that namespace
		}
		if (a.PrincipalType == "User" && a.PrincipalID != req.Subject.OID) || (a.PrincipalType == "Group" && !groups[a.PrincipalID]) {
			continue
		}
		role, err := s.role(r, a.Role)
		if err != nil {
			s.log.Warn("role assignment names a missing role", "id", a.ID, "role", a.Role)
			continue
		}
		grants = append(grants, grant{a, role})
	}
	out := CheckAccessResponse{Decisions: make([]Decision, 0, len(req.Actions))}
	for _, action := range req.Actions {
		d := Decision{Action: action, Reason: "no role assignment of cluster " + c.Name + " allows " + action}
		for _, g := range grants {
			if g.role.Allows(action) {
				scope := "cluster " + c.Name
				if g.a.Namespace != "" {
					scope = "namespace " + g.a.Namespace
				}
				d.Allowed, d.Reason = true, fmt.Sprintf("%s assigned to %s %s at %s", g.role.Name, strings.ToLower(g.a.PrincipalType), g.a.PrincipalID, scope)
				break
			}
		}
		out.Decisions = append(out.Decisions, d)
	}
	writeJSON(w, http.StatusOK, out)
}
