package access

import (
	"slices"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

const prefix = api.ActionPrefix

func actions(items ...string) []string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = prefix + s
	}
	return out
}

// The built-in cluster roles are Azure Arc's, action for action, as Azure
// documents them ("Azure Arc Enabled Kubernetes Cluster User Role", "Azure
// Arc Kubernetes Viewer", "… Writer", "… Admin", "… Cluster Admin"), in the
// action strings guard/authz produces. Where they differ, on purpose:
//
//   - Every cluster role includes api.ConnectAction: a user assigned Viewer
//     on a cluster, or on one namespace of it, can reach the cluster through
//     the relay. (In Azure the Cluster User Role is a separate assignment.)
//   - Viewer also reads pods/log, as Kubernetes' view role does, so that
//     kubectl logs works.
//   - Writer and Admin exclude (notDataActions) minting service-account
//     tokens (serviceaccounts/token/*) and the impersonate verb on anything
//     (users, groups, service accounts, uids, user extras). Arc's
//     serviceaccounts/* would allow both, because * matches across "/": a
//     Writer at cluster scope could take on any service account of any
//     namespace, kube-system's included. Only Cluster Admin can.
//
// What remains, as in Arc and in Kubernetes' edit and admin roles: a Writer
// runs pods (under any service account of the namespaces it covers) and
// reads secrets; an Admin can grant, through Kubernetes RBAC roles and role
// bindings (roles/* includes the bind and escalate verbs), what it lacks in
// those namespaces. Assign them on namespaces, not on the cluster, unless
// that is meant.
var (
	viewerActions = actions(
		"apps/controllerrevisions/read",
		"apps/daemonsets/read",
		"apps/deployments/read",
		"apps/replicasets/read",
		"apps/statefulsets/read",
		"autoscaling/horizontalpodautoscalers/read",
		"batch/cronjobs/read",
		"batch/jobs/read",
		"configmaps/read",
		"endpoints/read",
		"events.k8s.io/events/read",
		"events/read",
		"extensions/daemonsets/read",
		"extensions/deployments/read",
		"extensions/ingresses/read",
		"extensions/networkpolicies/read",
		"extensions/replicasets/read",
		"limitranges/read",
		"namespaces/read",
		"networking.k8s.io/ingresses/read",
		"networking.k8s.io/networkpolicies/read",
		"persistentvolumeclaims/read",
		"pods/read",
		"pods/log/read",
		"policy/poddisruptionbudgets/read",
		"replicationcontrollers/read",
		"resourcequotas/read",
		"serviceaccounts/read",
		"services/read",
	)
	writerActions = actions(
		"apps/controllerrevisions/read",
		"apps/daemonsets/*",
		"apps/deployments/*",
		"apps/replicasets/*",
		"apps/statefulsets/*",
		"autoscaling/horizontalpodautoscalers/*",
		"batch/cronjobs/*",
		"batch/jobs/*",
		"configmaps/*",
		"endpoints/*",
		"events.k8s.io/events/read",
		"events/read",
		"extensions/daemonsets/*",
		"extensions/deployments/*",
		"extensions/ingresses/*",
		"extensions/networkpolicies/*",
		"extensions/replicasets/*",
		"limitranges/read",
		"namespaces/read",
		"networking.k8s.io/ingresses/*",
		"networking.k8s.io/networkpolicies/*",
		"persistentvolumeclaims/*",
		"pods/*",
		"policy/poddisruptionbudgets/*",
		"replicationcontrollers/*",
		"resourcequotas/read",
		"secrets/*",
		"serviceaccounts/*",
		"services/*",
	)
	adminActions = append(slices.Clone(writerActions), actions(
		"authorization.k8s.io/localsubjectaccessreviews/write",
		"rbac.authorization.k8s.io/rolebindings/*",
		"rbac.authorization.k8s.io/roles/*",
	)...)
	// noCredentials are what Writer and Admin leave out of their wildcards.
	noCredentials = actions(
		"serviceaccounts/token/*",
		"*/impersonate/action",
	)
)

func withConnect(a []string) []string { return slices.Clip(append([]string{api.ConnectAction}, a...)) }

// BuiltInNames are the built-in cluster roles, in the order lists show them.
var BuiltInNames = []string{api.RoleClusterUser, api.RoleViewer, api.RoleWriter, api.RoleAdmin, api.RoleClusterAdmin}

// BuiltIn are the built-in cluster roles, assigned on a cluster or on one
// namespace of it. Each allows api.ConnectAction (Cluster Admin through its
// wildcard).
var BuiltIn = map[string]api.Role{
	api.RoleClusterUser: {Name: api.RoleClusterUser, BuiltIn: true,
		Description: "Connect to the cluster through the relay, nothing more: what the caller may do there is up to Kubernetes RBAC or another role (Arc's Cluster User Role: listClusterUserCredential).",
		DataActions: []string{api.ConnectAction}},
	api.RoleViewer: {Name: api.RoleViewer, BuiltIn: true,
		Description: "Connect, and view all resources in the cluster/namespace except secrets, roles and role bindings.",
		DataActions: withConnect(viewerActions)},
	api.RoleWriter: {Name: api.RoleWriter, BuiltIn: true,
		Description: "Connect, and update everything in the cluster/namespace, secrets included, except (cluster)roles and (cluster)role bindings; no service-account tokens or impersonation.",
		DataActions: withConnect(writerActions), NotDataActions: noCredentials},
	api.RoleAdmin: {Name: api.RoleAdmin, BuiltIn: true,
		Description: "Connect, and manage all resources in the cluster/namespace, roles and role bindings included, except updating or deleting resource quotas and namespaces; no service-account tokens or impersonation. Meant for a namespace.",
		DataActions: withConnect(adminActions), NotDataActions: noCredentials},
	api.RoleClusterAdmin: {Name: api.RoleClusterAdmin, BuiltIn: true,
		Description: "Connect, and manage all resources in the cluster.",
		DataActions: []string{prefix + "*"}},
}
