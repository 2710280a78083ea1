// Package access decides what a principal may do: on a cluster, from Arc's
// built-in roles, custom role definitions with * wildcards and
// not-data-actions, and the role assignments of the cluster (at cluster or
// namespace scope); on the relay, from the management roles (Owner,
// Contributor, Reader) of relay-scope assignments and API tokens. The agent
// API's checkAccess (for guard), the relay's front door (CanConnect) and
// the management API all use it. Assignments that have expired grant
// nothing, before any sweep deletes them.
package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// MatchAction reports whether action matches pattern, where * matches any
// run of characters ("/" included, as in Azure): ".../apps/*/read" matches
// ".../apps/deployments/read" and ".../apps/deployments/scale/read". Case
// does not matter.
func MatchAction(pattern, action string) bool {
	p, a := 0, 0
	star, mark := -1, 0
	for a < len(action) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, a
			p++
		case p < len(pattern) && asciiFold(pattern[p]) == asciiFold(action[a]):
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

// asciiFold lowercases an ASCII letter and leaves every other byte alone.
func asciiFold(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + ('a' - 'A')
	}
	return b
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
		if !strings.HasPrefix(a, prefix) || len(a) > 512 || strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r > '~' }) {
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
		Cluster: a.Cluster, Namespace: a.Namespace, CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt, CreatedBy: a.CreatedBy}
}

// Resolve finds a role by name: built-in (cluster or management), or custom
// from the store (store.ErrNotFound when neither).
func Resolve(ctx context.Context, st store.Store, name string) (api.Role, error) {
	if b, ok := BuiltIn[name]; ok {
		return b, nil
	}
	if m, ok := Management[name]; ok {
		return m, nil
	}
	d, err := st.GetRole(ctx, name)
	if err != nil {
		return api.Role{}, err
	}
	return FromStore(d), nil
}

// clusterRole resolves the role of an assignment on a cluster: a
// management role there grants nothing (ok false), nor does a custom role
// that no longer exists.
func clusterRole(ctx context.Context, st store.Store, a *store.RoleAssignment, log *slog.Logger) (api.Role, bool, error) {
	if IsManagement(a.Role) {
		return api.Role{}, false, nil
	}
	r, err := Resolve(ctx, st, a.Role)
	if errors.Is(err, store.ErrNotFound) {
		if log != nil {
			log.Warn("role assignment names a missing role", "id", a.ID, "role", a.Role)
		}
		return api.Role{}, false, nil
	}
	if err != nil {
		return api.Role{}, false, err
	}
	return r, true, nil
}

// CheckRequest validates a checkAccess request.
func CheckRequest(req *api.CheckAccessRequest) error {
	if req.Subject.OID == "" || len(req.Actions) == 0 || len(req.Actions) > api.MaxCheckAccessActions || len(req.Subject.Groups) > api.MaxCheckAccessGroups {
		return fmt.Errorf("checkAccess needs subject.oid and 1-%d actions (and at most %d groups)", api.MaxCheckAccessActions, api.MaxCheckAccessGroups)
	}
	return nil
}

// Decide answers each action of req from the role assignments of cluster
// that have not expired at now. An assignment naming a role that no longer
// exists grants nothing; a store error is returned, not turned into
// denials. Each allowed action rests on the longest-lasting assignment
// that allows it (its reason names that one); ValidUntil is the earliest
// expiry among those, zero when none expires. Denials need no bound:
// expiry only takes access away.
func Decide(ctx context.Context, st store.Store, cluster string, req *api.CheckAccessRequest, now time.Time, log *slog.Logger) (api.CheckAccessResponse, error) {
	if cluster == "" {
		return api.CheckAccessResponse{}, errors.New("access: Decide needs a cluster")
	}
	as, err := st.ListAssignments(ctx, cluster)
	if err != nil {
		return api.CheckAccessResponse{}, err
	}
	groups := groupSet(req.Subject.Groups)
	type grant struct {
		basis
		role api.Role
	}
	var grants []grant
	for _, a := range as {
		if a.Cluster != cluster || a.Expired(now) || !matches(a, req.Subject.OID, groups) {
			continue
		}
		if a.Namespace != "" && a.Namespace != req.Namespace {
			continue // a namespace assignment covers only that namespace
		}
		role, ok, err := clusterRole(ctx, st, a, log)
		if err != nil {
			return api.CheckAccessResponse{}, err
		}
		if !ok {
			continue
		}
		scope := "cluster " + cluster
		if a.Namespace != "" {
			scope = "namespace " + a.Namespace
		}
		grants = append(grants, grant{basis{role: a.Role, until: a.ExpiresAt, why: describe(a, scope)}, role})
	}
	out := api.CheckAccessResponse{Decisions: make([]api.Decision, 0, len(req.Actions))}
	for _, action := range req.Actions {
		d := api.Decision{Action: action, Reason: "no role assignment of cluster " + cluster + " allows " + action}
		var best *grant
		for i, g := range grants {
			if Allows(g.role, action) && (best == nil || g.outlasts(best.basis)) {
				best = &grants[i]
			}
		}
		if best != nil {
			d.Allowed, d.Reason = true, best.why
			if u := best.until; !u.IsZero() && (out.ValidUntil.IsZero() || u.Before(out.ValidUntil)) {
				out.ValidUntil = u
			}
		}
		out.Decisions = append(out.Decisions, d)
	}
	return out, nil
}
