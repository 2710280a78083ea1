package api

import "time"

// ActionPrefix starts every data action, as in Azure Arc.
const ActionPrefix = "Microsoft.Kubernetes/connectedClusters/"

// ConnectAction is what a caller needs on a cluster before the relay admits
// a request to it (Arc's "Cluster User Role" action). Every cluster role
// below grants it; so do the management roles Owner and Contributor.
const ConnectAction = ActionPrefix + "listClusterUserCredential/action"

// Built-in cluster role names, as in Azure Arc. They are assigned on a
// cluster (or one namespace of it).
const (
	RoleClusterUser  = "Cluster User"
	RoleViewer       = "Viewer"
	RoleWriter       = "Writer"
	RoleAdmin        = "Admin"
	RoleClusterAdmin = "Cluster Admin"
)

// Management roles are assigned on the relay as a whole (an assignment
// without a cluster) and to API tokens; they decide what a caller may do
// with the management API.
const (
	// RoleOwner may do everything, role assignments included.
	RoleOwner = "Owner"
	// RoleContributor manages clusters, registration tokens, API tokens (of
	// its own role or less) and kubeconfigs; not role assignments.
	RoleContributor = "Contributor"
	// RoleReader lists and shows.
	RoleReader = "Reader"
)

// Principal types of a role assignment.
const (
	PrincipalUser  = "User"
	PrincipalGroup = "Group"
)

// Role is a role definition as the API shows it.
type Role struct {
	Name           string   `json:"name"`
	Description    string   `json:"description,omitempty"`
	BuiltIn        bool     `json:"builtIn"`
	DataActions    []string `json:"dataActions"`
	NotDataActions []string `json:"notDataActions,omitempty"`
}

// RoleList answers GET RoleDefinitionsPath.
type RoleList struct {
	Value []Role `json:"value"`
}

// RoleRequest is the body of PUT RoleDefinitionPath.
type RoleRequest struct {
	Description    string   `json:"description,omitempty"`
	DataActions    []string `json:"dataActions"`
	NotDataActions []string `json:"notDataActions,omitempty"`
}

// AssignmentRequest is the body of POST RoleAssignmentsPath.
type AssignmentRequest struct {
	Role          string `json:"role"`
	PrincipalID   string `json:"principalId"`
	PrincipalType string `json:"principalType,omitempty"` // PrincipalUser (default) or PrincipalGroup
	// Cluster is the cluster the role is assigned on; empty for a
	// management role (Owner, Contributor, Reader), which covers the relay.
	Cluster   string `json:"cluster,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// ExpiresAt ends the assignment (just-in-time access); zero means never.
	// The relay stops honouring it then and deletes it soon after.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// RoleAssignment grants a role to a principal (a user's object ID or a group
// ID) on a cluster, or on one namespace of it.
type RoleAssignment struct {
	ID            string    `json:"id"`
	Role          string    `json:"role"`
	PrincipalID   string    `json:"principalId"`
	PrincipalType string    `json:"principalType"`
	Cluster       string    `json:"cluster,omitempty"`
	Namespace     string    `json:"namespace,omitempty"`
	CreatedAt     time.Time `json:"createdAt"`
	// ExpiresAt: see AssignmentRequest.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// CreatedBy is the principal that made the assignment.
	CreatedBy string `json:"createdBy,omitempty"`
}

// AssignmentList answers GET RoleAssignmentsPath.
type AssignmentList struct {
	Value []RoleAssignment `json:"value"`
}

// Limits of a checkAccess call.
const (
	MaxCheckAccessActions = 100
	MaxCheckAccessGroups  = 5000
)

// Subject is who a checkAccess call asks about.
type Subject struct {
	OID    string   `json:"oid"`
	Groups []string `json:"groups,omitempty"`
}

// CheckAccessRequest is the body of POST CheckAccessPath, made with the
// cluster's own certificate: the relay decides from that cluster's role
// assignments only.
type CheckAccessRequest struct {
	Subject Subject  `json:"subject"`
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

// CheckAccessResponse answers checkAccess, one decision per action, in order.
type CheckAccessResponse struct {
	Decisions []Decision `json:"decisions"`
	// ValidUntil, when set, is when an assignment these decisions rest on
	// expires: a cache must not keep them past it.
	ValidUntil time.Time `json:"validUntil,omitzero"`
}
