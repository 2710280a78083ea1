// Package access decides what a principal may do on a cluster: Arc's
// built-in roles, custom role definitions with * wildcards and
// not-data-actions, and the role assignments of a cluster (at cluster or
// namespace scope). The agent API's checkAccess (for guard) and the
// management API's role calls both use it.
package access

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

const prefix = api.ActionPrefix

func actions(items ...string) []string {
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
		a = append(a, prefix+r+"/read")
	}
	for _, g := range groupsAll {
		a = append(a, prefix+g+"/*/read")
	}
	return a
}

func writerActions() []string {
	a := viewerActions()
	for _, r := range coreWrite {
		a = append(a, prefix+r+"/*")
	}
	for _, g := range groupsAll {
		a = append(a, prefix+g+"/*")
	}
	return a
}

// BuiltInNames are the built-in roles, in the order lists show them.
var BuiltInNames = []string{api.RoleViewer, api.RoleWriter, api.RoleAdmin, api.RoleClusterAdmin}

// BuiltIn are Arc's four roles for connected clusters.
var BuiltIn = map[string]api.Role{
	api.RoleViewer: {Name: api.RoleViewer, BuiltIn: true, Description: "Read most objects in a namespace; not secrets, roles or role bindings.",
		DataActions: viewerActions()},
	api.RoleWriter: {Name: api.RoleWriter, BuiltIn: true, Description: "Read and write most objects in a namespace, secrets included; not roles or role bindings.",
		DataActions: writerActions()},
	api.RoleAdmin: {Name: api.RoleAdmin, BuiltIn: true, Description: "Writer plus roles and role bindings; meant to be granted within a namespace.",
		DataActions: append(writerActions(), actions("rbac.authorization.k8s.io/roles/*", "rbac.authorization.k8s.io/rolebindings/*",
			"authorization.k8s.io/localsubjectaccessreviews/write")...)},
	api.RoleClusterAdmin: {Name: api.RoleClusterAdmin, BuiltIn: true, Description: "Everything, in every namespace and at cluster scope.",
		DataActions: []string{prefix + "*"}},
}

// MatchAction reports whether action matches pattern, where * matches any
// run of characters ("/" included): ".../apps/*/read" matches
// ".../apps/deployments/read". Case does not matter.
func MatchAction(pattern, action string) bool {
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
func Allows(r api.Role, action string) bool {
	for _, n := range r.NotDataActions {
		if MatchAction(n, action) {
			return false
		}
	}
	for _, d := range r.DataActions {
		if MatchAction(d, action) {
			return true
		}
	}
	return false
}

// ValidActions checks a role definition's action list.
func ValidActions(list []string) error {
	if len(list) > 200 {
		return fmt.Errorf("%d actions: at most 200", len(list))
	}
	for _, a := range list {
		if !strings.HasPrefix(a, prefix) || len(a) > 512 || strings.ContainsAny(a, " \t\n") {
			return fmt.Errorf("action %q: must start with %s, e.g. %spods/read or %sapps/deployments/*", a, prefix, prefix, prefix)
		}
	}
	return nil
}

// FromStore is the API view of a stored custom role.
func FromStore(d *store.RoleDefinition) api.Role {
	return api.Role{Name: d.Name, Description: d.Description, DataActions: d.DataActions, NotDataActions: d.NotDataActions}
}

// AssignmentFromStore is the API view of a stored role assignment.
func AssignmentFromStore(a *store.RoleAssignment) api.RoleAssignment {
	return api.RoleAssignment{ID: a.ID, Role: a.Role, PrincipalID: a.PrincipalID, PrincipalType: a.PrincipalType,
		Cluster: a.Cluster, Namespace: a.Namespace, CreatedAt: a.CreatedAt}
}

// Resolve finds a role by name: built-in, or custom from the store
// (store.ErrNotFound when neither).
func Resolve(ctx context.Context, st store.Store, name string) (api.Role, error) {
	if b, ok := BuiltIn[name]; ok {
		return b, nil
	}
	d, err := st.GetRole(ctx, name)
	if err != nil {
		return api.Role{}, err
	}
	return FromStore(d), nil
}

// CheckRequest validates a checkAccess request.
func CheckRequest(req *api.CheckAccessRequest) error {
	if req.Subject.OID == "" || len(req.Actions) == 0 || len(req.Actions) > api.MaxCheckAccessActions || len(req.Subject.Groups) > api.MaxCheckAccessGroups {
		return fmt.Errorf("checkAccess needs subject.oid and 1-%d actions (and at most %d groups)", api.MaxCheckAccessActions, api.MaxCheckAccessGroups)
	}
	return nil
}

// Decide answers each action of req from the role assignments of cluster.
// An assignment naming a role that no longer exists grants nothing.
func Decide(ctx context.Context, st store.Store, cluster string, req *api.CheckAccessRequest, log *slog.Logger) (api.CheckAccessResponse, error) {
	as, err := st.ListAssignments(ctx, cluster)
	if err != nil {
		return api.CheckAccessResponse{}, err
	}
	groups := map[string]bool{}
	for _, g := range req.Subject.Groups {
		groups[g] = true
	}
	type grant struct {
		a    *store.RoleAssignment
		role api.Role
	}
	var grants []grant
	for _, a := range as {
		if a.Namespace != "" && a.Namespace != req.Namespace {
			continue // a namespace assignment covers only that namespace
		}
		if (a.PrincipalType == api.PrincipalUser && a.PrincipalID != req.Subject.OID) || (a.PrincipalType == api.PrincipalGroup && !groups[a.PrincipalID]) {
			continue
		}
		role, err := Resolve(ctx, st, a.Role)
		if err != nil {
			if log != nil {
				log.Warn("role assignment names a missing role", "id", a.ID, "role", a.Role)
			}
			continue
		}
		grants = append(grants, grant{a, role})
	}
	out := api.CheckAccessResponse{Decisions: make([]api.Decision, 0, len(req.Actions))}
	for _, action := range req.Actions {
		d := api.Decision{Action: action, Reason: "no role assignment of cluster " + cluster + " allows " + action}
		for _, g := range grants {
			if Allows(g.role, action) {
				scope := "cluster " + cluster
				if g.a.Namespace != "" {
					scope = "namespace " + g.a.Namespace
				}
				d.Allowed, d.Reason = true, fmt.Sprintf("%s assigned to %s %s at %s", g.role.Name, strings.ToLower(g.a.PrincipalType), g.a.PrincipalID, scope)
				break
			}
		}
		out.Decisions = append(out.Decisions, d)
	}
	return out, nil
}
