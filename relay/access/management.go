package access

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// ManagementNames are the management roles, highest first.
var ManagementNames = []string{api.RoleOwner, api.RoleContributor, api.RoleReader}

// Management are the management roles: assigned on the relay as a whole (an
// assignment without cluster or namespace) or carried by an API token, they
// decide what the management API lets a caller do (see MgmtAllows). Their
// data actions say only that Owner and Contributor may connect to every
// cluster, as Arc's Owner and Contributor ("*" actions) include
// listClusterUserCredential; what they may then do inside a cluster is up
// to cluster roles or Kubernetes RBAC.
var Management = map[string]api.Role{
	api.RoleOwner: {Name: api.RoleOwner, BuiltIn: true,
		Description: "Management role (assign without a cluster): everything, role definitions and assignments included; connects to every cluster.",
		DataActions: []string{api.ConnectAction}},
	api.RoleContributor: {Name: api.RoleContributor, BuiltIn: true,
		Description: "Management role (assign without a cluster): clusters, registration tokens, kubeconfigs, API tokens (of its role or lower) and the audit log; not role definitions or assignments. Connects to every cluster.",
		DataActions: []string{api.ConnectAction}},
	api.RoleReader: {Name: api.RoleReader, BuiltIn: true,
		Description: "Management role (assign without a cluster): lists and shows clusters, roles, assignments and API tokens; not the audit log, and no connecting.",
		DataActions: []string{}},
}

// IsManagement reports whether name is a management role.
func IsManagement(name string) bool { _, ok := Management[name]; return ok }

// IsBuiltIn reports whether name is a built-in role, cluster or management:
// a custom role cannot take the name.
func IsBuiltIn(name string) bool { _, ok := BuiltIn[name]; return ok || IsManagement(name) }

// RoleRank orders the management roles: Owner 3, Contributor 2, Reader 1;
// anything else 0.
func RoleRank(role string) int {
	switch role {
	case api.RoleOwner:
		return 3
	case api.RoleContributor:
		return 2
	case api.RoleReader:
		return 1
	}
	return 0
}

// AtMost reports whether role is a management role no higher than than: a
// caller holding than may give role to an API token.
func AtMost(role, than string) bool { r := RoleRank(role); return r > 0 && r <= RoleRank(than) }

// Highest is the highest management role of roles ("" when none is).
func Highest(roles []string) string {
	best := ""
	for _, r := range roles {
		if RoleRank(r) > RoleRank(best) {
			best = r
		}
	}
	return best
}

// Op is a management operation, as MgmtAllows decides it; its value doubles
// as a log and metric label.
type Op string

// Management operations and who may do them.
const (
	// OpWhoAmI: show the caller's own principal and roles. Every
	// authenticated caller, with or without a role.
	OpWhoAmI Op = "whoami"
	// OpClientCertificate: a relay client certificate for the caller
	// itself. Every authenticated caller, with or without a role: the
	// certificate only proves who the caller is, and CanConnect still
	// decides each cluster.
	OpClientCertificate Op = "clientcertificate/create"
	// OpRead: list and show clusters, roles, assignments and tokens.
	// Reader, Contributor, Owner.
	OpRead Op = "read"
	// OpReadAudit: read the audit log. Contributor and Owner: it shows
	// every caller's requests and addresses, more than Reader's inventory.
	OpReadAudit Op = "audit/read"
	// OpWriteClusters: create, update and delete clusters; issue
	// registration tokens and kubeconfigs. Contributor, Owner.
	OpWriteClusters Op = "clusters/write"
	// OpWriteTokens: create and revoke API tokens. Contributor, Owner; the
	// new token's role must be AtMost the caller's Highest.
	OpWriteTokens Op = "tokens/write"
	// OpAssignRoles: create, change and delete role definitions and role
	// assignments. Owner only.
	OpAssignRoles Op = "roles/write"
)

// MgmtAllows reports whether a caller holding roles (management roles;
// others are ignored) may do op. An unknown op is refused.
func MgmtAllows(roles []string, op Op) bool {
	need := 0
	switch op {
	case OpWhoAmI, OpClientCertificate:
		return true
	case OpRead:
		need = RoleRank(api.RoleReader)
	case OpReadAudit, OpWriteClusters, OpWriteTokens:
		need = RoleRank(api.RoleContributor)
	case OpAssignRoles:
		need = RoleRank(api.RoleOwner)
	default:
		return false
	}
	return RoleRank(Highest(roles)) >= need
}

// PrincipalRef is how assignments and tokens record who made them:
// "admin", "user:<object id>" or "token:<token id>".
func PrincipalRef(p api.Principal) string {
	if p.Kind == api.PrincipalKindAdmin {
		return api.PrincipalKindAdmin
	}
	return p.Kind + ":" + p.ID
}

// basis is one reason a principal holds a role, and until when.
type basis struct {
	role  string
	until time.Time // zero: no expiry
	why   string
}

// outlasts reports whether b lasts longer than c (no expiry beats any).
func (b basis) outlasts(c basis) bool {
	switch {
	case b.until.IsZero():
		return !c.until.IsZero()
	case c.until.IsZero():
		return false
	}
	return b.until.After(c.until)
}

func until(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return " until " + t.UTC().Format(time.RFC3339)
}

// matches reports whether the assignment names the user id or one of groups.
func matches(a *store.RoleAssignment, id string, groups map[string]bool) bool {
	switch a.PrincipalType {
	case api.PrincipalUser:
		return a.PrincipalID == id
	case api.PrincipalGroup:
		return groups[a.PrincipalID]
	}
	return false
}

func groupSet(gs []string) map[string]bool {
	m := make(map[string]bool, len(gs))
	for _, g := range gs {
		m[g] = true
	}
	return m
}

func describe(a *store.RoleAssignment, scope string) string {
	return fmt.Sprintf("%s assigned to %s %s at %s%s", a.Role, strings.ToLower(a.PrincipalType), a.PrincipalID, scope, until(a.ExpiresAt))
}

// managementBases are the principal's management roles with their reasons:
// the admin token is Owner; an API token has its stored role while it is
// valid; a user has the roles of unexpired relay-scope assignments to it or
// its groups.
func managementBases(ctx context.Context, st store.Store, p api.Principal, now time.Time) ([]basis, error) {
	switch p.Kind {
	case api.PrincipalKindAdmin:
		return []basis{{role: api.RoleOwner, why: "the relay's admin token is Owner"}}, nil
	case api.PrincipalKindToken:
		t, err := st.GetToken(ctx, p.ID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
		if t.Expired(now) || !IsManagement(t.Role) {
			return nil, nil
		}
		if _, revoked, err := TokenRevoked(ctx, st, t, now); err != nil || revoked {
			return nil, err
		}
		return []basis{{role: t.Role, until: t.ExpiresAt, why: fmt.Sprintf("API token %s has role %s%s", t.ID, t.Role, until(t.ExpiresAt))}}, nil
	case api.PrincipalKindUser:
		as, err := st.ListAssignments(ctx, "")
		if err != nil {
			return nil, err
		}
		groups := groupSet(p.Groups)
		var out []basis
		for _, a := range as {
			if a.Cluster != "" || a.Namespace != "" || !IsManagement(a.Role) || a.Expired(now) || !matches(a, p.ID, groups) {
				continue
			}
			out = append(out, basis{role: a.Role, until: a.ExpiresAt, why: describe(a, "relay scope")})
		}
		return out, nil
	}
	return nil, nil
}

// ManagementRoles returns the management roles principal p holds at now,
// highest first: the admin token is Owner; an API token has its stored Role
// (none when the token is missing or expired); a user has the roles of the
// relay-scope assignments (no cluster) to its ID or any of its groups that
// have not expired. Other kinds hold none.
func ManagementRoles(ctx context.Context, st store.Store, p api.Principal, now time.Time) ([]string, error) {
	bs, err := managementBases(ctx, st, p, now)
	if err != nil {
		return nil, err
	}
	var roles []string
	for _, b := range bs {
		if !slices.Contains(roles, b.role) {
			roles = append(roles, b.role)
		}
	}
	slices.SortFunc(roles, func(a, b string) int { return cmp.Compare(RoleRank(b), RoleRank(a)) })
	return roles, nil
}

// RoleUntil is how long p keeps a management role of at least role's rank:
// the latest end of the bases that give it one (zero: one never ends), and
// false when p holds none. An API token p creates must not outlive it.
func RoleUntil(ctx context.Context, st store.Store, p api.Principal, role string, now time.Time) (time.Time, bool, error) {
	bs, err := managementBases(ctx, st, p, now)
	if err != nil {
		return time.Time{}, false, err
	}
	var until time.Time
	found := false
	for _, b := range bs {
		if RoleRank(b.role) < RoleRank(role) {
			continue
		}
		if b.until.IsZero() {
			return time.Time{}, true, nil
		}
		found = true
		if b.until.After(until) {
			until = b.until
		}
	}
	return until, found, nil
}

// maxTokenChain bounds how many creators TokenRevoked follows.
const maxTokenChain = 16

// TokenRevoked reports whether an API token made by another API token lost
// its footing: a token in its chain of creators is gone (revoked) or
// expired. Revoking a token thus revokes the tokens it made, and theirs.
// It returns the ID of the missing creator.
func TokenRevoked(ctx context.Context, st store.Store, t *store.APIToken, now time.Time) (string, bool, error) {
	for range maxTokenChain {
		parent, ok := strings.CutPrefix(t.CreatedBy, api.PrincipalKindToken+":")
		if !ok {
			return "", false, nil
		}
		p, err := st.GetToken(ctx, parent)
		if errors.Is(err, store.ErrNotFound) {
			return parent, true, nil
		} else if err != nil {
			return "", false, err
		}
		if p.Expired(now) {
			return parent, true, nil
		}
		t = p
	}
	return t.ID, true, nil // a chain this long is refused
}
