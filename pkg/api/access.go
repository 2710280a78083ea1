package api

import "time"

// ActionPrefix starts every data action, as in Azure Arc.
const ActionPrefix = "Microsoft.Kubernetes/connectedClusters/"

// Built-in role names, as in Azure Arc.
const (
	RoleViewer       = "Viewer"
	RoleWriter       = "Writer"
	RoleAdmin        = "Admin"
	RoleClusterAdmin = "Cluster Admin"
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
	Cluster       string `json:"cluster"`
	Namespace     string `json:"namespace,omitempty"`
}

// RoleAssignment grants a role to a principal (a user's object ID or a group
// ID) on a cluster, or on one namespace of it.
type RoleAssignment struct {
	ID            string    `json:"id"`
	Role          string    `json:"role"`
	PrincipalID   string    `json:"principalId"`
	PrincipalType string    `json:"principalType"`
	Cluster       string    `json:"cluster"`
	Namespace     string    `json:"namespace,omitempty"`
	CreatedAt     time.Time `json:"createdAt"`
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
}
