package access

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// Grant is whether a principal may connect to a cluster, and why.
type Grant struct {
	Allowed bool
	// Reason names the role and assignment (or token) that granted it, or
	// says that none did.
	Reason string
	// Until is when the grant ends unless something changes: the expiry of
	// what granted it (of the longest-lasting, when several did); zero
	// when that does not expire.
	Until time.Time
}

// CanConnect decides whether p may reach cluster through the relay (Arc's
// listClusterUserCredential, api.ConnectAction) at now. It allows:
//
//   - a principal whose management roles allow it (Owner, Contributor;
//     the admin token is Owner), on every cluster;
//   - a user with an unexpired assignment on the cluster, at cluster scope
//     or on any namespace of it, to its ID or one of its groups, of a role
//     that allows api.ConnectAction (every built-in cluster role does).
//
// API tokens carry a management role only: assignments never name them.
// A cluster that is not registered is refused exactly like one without an
// assignment (same reason, nil error), so that the answer does not tell
// which names exist. An error is a store failure.
func CanConnect(ctx context.Context, st store.Store, cluster string, p api.Principal, now time.Time) (Grant, error) {
	var best *basis
	consider := func(b basis) {
		if best == nil || b.outlasts(*best) {
			best = &b
		}
	}
	ms, err := managementBases(ctx, st, p, now)
	if err != nil {
		return Grant{}, err
	}
	for _, b := range ms {
		if Allows(Management[b.role], api.ConnectAction) {
			consider(b)
		}
	}
	if p.Kind == api.PrincipalKindUser && cluster != "" {
		bs, err := clusterConnectBases(ctx, st, cluster, p, now)
		if err != nil {
			return Grant{}, err
		}
		for _, b := range bs {
			consider(b)
		}
	}
	if best == nil {
		return Grant{Reason: fmt.Sprintf("%s may not connect to cluster %s: no role assignment on it grants %s (e.g. %s or %s)",
			PrincipalRef(p), cluster, api.ConnectAction, api.RoleClusterUser, api.RoleViewer)}, nil
	}
	return Grant{Allowed: true, Reason: best.why, Until: best.until}, nil
}

// clusterConnectBases are the assignments on cluster that let user p connect.
func clusterConnectBases(ctx context.Context, st store.Store, cluster string, p api.Principal, now time.Time) ([]basis, error) {
	// Assignments outliving their cluster (left by older versions) grant
	// nothing.
	if _, err := st.GetCluster(ctx, cluster); errors.Is(err, store.ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	as, err := st.ListAssignments(ctx, cluster)
	if err != nil {
		return nil, err
	}
	groups := groupSet(p.Groups)
	var out []basis
	for _, a := range as {
		if a.Cluster != cluster || a.Expired(now) || !matches(a, p.ID, groups) {
			continue
		}
		role, ok, err := clusterRole(ctx, st, a, nil)
		if err != nil {
			return nil, err
		}
		if !ok || !Allows(role, api.ConnectAction) {
			continue
		}
		scope := "cluster " + cluster
		if a.Namespace != "" {
			scope = "namespace " + a.Namespace + " of cluster " + cluster
		}
		out = append(out, basis{role: a.Role, until: a.ExpiresAt, why: describe(a, scope)})
	}
	return out, nil
}
