// Package store keeps the relay's state: the registered clusters, their
// registration tokens and certificate generations, the cluster CA, role
// definitions and assignments, and API tokens. Bolt is
// the embedded store of a single relay; a shared etcd store for many relays
// implements the same interface.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned for a cluster (role, assignment, token) that does
// not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating a cluster whose name is taken (an
// assignment or token whose ID is).
var ErrExists = errors.New("already exists")

// Cluster is a registered cluster.
type Cluster struct {
	Name      string    `json:"name"`
	UID       string    `json:"uid"`
	CreatedAt time.Time `json:"createdAt"`

	// RegistrationTokenHash is the SHA-256 (hex) of the one-time
	// registration token; the token itself is shown once and never stored.
	RegistrationTokenHash      string    `json:"registrationTokenHash,omitempty"`
	RegistrationTokenExpiresAt time.Time `json:"registrationTokenExpiresAt,omitzero"`
	RegistrationTokenUsed      bool      `json:"registrationTokenUsed,omitempty"`

	// CertGeneration is written into every certificate issued to the
	// cluster; certificates of an older generation are revoked. Enrolment
	// with a new registration token starts a new generation.
	CertGeneration int `json:"certGeneration"`
	// CertNotAfter is when the newest certificate issued to the cluster
	// expires (zero before enrolment).
	CertNotAfter time.Time `json:"certNotAfter,omitzero"`

	// Version counts changes; the API shows it as the etag. The store bumps it
	// on every write.
	Version int64             `json:"version"`
	Tags    map[string]string `json:"tags,omitempty"`
	// Metadata is what the cluster's agents last reported about it.
	Metadata Metadata `json:"metadata"`
	// LastHeartbeat is when an agent last reported in.
	LastHeartbeat time.Time `json:"lastHeartbeat,omitzero"`
	// Status is the connectivity status last recorded (see Events).
	Status string `json:"status,omitempty"`
	// Events are the latest status transitions, oldest first (bounded).
	Events []Event `json:"events,omitempty"`
}

// Metadata describes a cluster as its metadata agent sees it.
type Metadata struct {
	KubernetesVersion string      `json:"kubernetesVersion,omitempty"`
	AgentVersion      string      `json:"agentVersion,omitempty"`
	TotalNodeCount    int         `json:"totalNodeCount"`
	TotalCoreCount    int         `json:"totalCoreCount"`
	Distribution      string      `json:"distribution,omitempty"`
	Infrastructure    string      `json:"infrastructure,omitempty"`
	Agents            []AgentRole `json:"agents,omitempty"`
	UpdatedAt         time.Time   `json:"updatedAt,omitzero"`
}

// AgentRole is one agent role's health as the sync role reported it.
type AgentRole struct {
	Role          string `json:"role"`
	Version       string `json:"version,omitempty"`
	Replicas      int    `json:"replicas"`
	ReadyReplicas int    `json:"readyReplicas"`
	Ready         bool   `json:"ready"`
	LastError     string `json:"lastError,omitempty"`
}

// Event is a connectivity status transition.
type Event struct {
	Time   time.Time `json:"time"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
}

// RoleDefinition is a custom role: the data actions it allows, minus its
// not-data-actions (both may use * wildcards).
type RoleDefinition struct {
	Name           string    `json:"name"`
	Description    string    `json:"description,omitempty"`
	DataActions    []string  `json:"dataActions"`
	NotDataActions []string  `json:"notDataActions,omitempty"`
	UpdatedAt      time.Time `json:"updatedAt,omitzero"`
}

// RoleAssignment grants a role to a principal (a user's object ID or a group
// ID) on a cluster, or on one namespace of it, or (Cluster "") a management
// role on the relay as a whole.
type RoleAssignment struct {
	ID            string `json:"id"`
	Role          string `json:"role"`
	PrincipalID   string `json:"principalId"`
	PrincipalType string `json:"principalType"` // User or Group
	// Cluster is empty for a management role (relay scope).
	Cluster   string    `json:"cluster"`
	Namespace string    `json:"namespace,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt ends the assignment; zero means never. It is expired once
	// ExpiresAt is not after now (see Expired).
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// CreatedBy is the principal that made the assignment (kind:id).
	CreatedBy string `json:"createdBy,omitempty"`
}

// Expired reports whether the assignment has expired at now.
func (a *RoleAssignment) Expired(now time.Time) bool {
	return !a.ExpiresAt.IsZero() && !a.ExpiresAt.After(now)
}

// APIToken is an API token for the management API. The secret is shown once
// at creation and never stored.
type APIToken struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Role is the token's management role (Owner, Contributor or Reader).
	Role string `json:"role"`
	// Hash is the SHA-256 (hex) of the whole token, as secret.Hash makes it.
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt is required: a token without one counts as expired.
	ExpiresAt time.Time `json:"expiresAt"`
	CreatedBy string    `json:"createdBy,omitempty"`
}

// Expired reports whether the token has expired at now; a token without an
// expiry has (fail closed).
func (t *APIToken) Expired(now time.Time) bool { return !now.Before(t.ExpiresAt) }

// MaxEvents bounds Cluster.Events.
const MaxEvents = 20

// AddEvent appends a transition and drops the oldest beyond MaxEvents.
func (c *Cluster) AddEvent(e Event) {
	c.Events = append(c.Events, e)
	if n := len(c.Events) - MaxEvents; n > 0 {
		c.Events = append([]Event(nil), c.Events[n:]...)
	}
}

// CA is the cluster CA's certificate and private key, PEM.
type CA struct {
	CertPEM []byte `json:"cert"`
	KeyPEM  []byte `json:"key"`
}

// Store is the relay's persistent state. Every method is safe for concurrent use.
type Store interface {
	// CreateCluster stores a new cluster (ErrExists when the name is taken).
	// Role assignments left over under its name (a delete cut short, or
	// versions that deleted them after the cluster) are all deleted before
	// the cluster becomes visible: in the same transaction, or (on etcd,
	// more than a transaction holds) in earlier ones, each only while no
	// cluster of the name exists.
	CreateCluster(ctx context.Context, c *Cluster) error
	GetCluster(ctx context.Context, name string) (*Cluster, error)
	ListClusters(ctx context.Context) ([]*Cluster, error)
	// UpdateCluster reads the cluster, lets update change it, and writes it
	// back atomically; an error from update aborts without writing.
	UpdateCluster(ctx context.Context, name string, update func(*Cluster) error) (*Cluster, error)
	// DeleteCluster deletes the cluster and its role assignments, so that a
	// cluster registered later under the same name inherits none: in one
	// transaction, or (on etcd, more than a transaction holds) the cluster
	// first and its assignments after it, which CreateCluster finishes if
	// the delete is cut short.
	DeleteCluster(ctx context.Context, name string) error
	// InitCA stores ca unless a CA is stored already, and returns the stored one.
	InitCA(ctx context.Context, ca *CA) (*CA, error)

	// PutRole creates or replaces a custom role definition.
	PutRole(ctx context.Context, r *RoleDefinition) error
	GetRole(ctx context.Context, name string) (*RoleDefinition, error)
	ListRoles(ctx context.Context) ([]*RoleDefinition, error)
	DeleteRole(ctx context.Context, name string) error
	// CreateAssignment stores a new assignment: ErrExists when its ID is
	// taken, ErrNotFound when it names a cluster that is not registered
	// (checked in the same transaction, so it cannot outlive a concurrent
	// DeleteCluster).
	CreateAssignment(ctx context.Context, a *RoleAssignment) error
	DeleteAssignment(ctx context.Context, id string) error
	// ListAssignments returns the assignments of a cluster ("" = all, those
	// of relay scope included: their Cluster is "").
	ListAssignments(ctx context.Context, cluster string) ([]*RoleAssignment, error)
	// DeleteExpiredAssignments deletes the assignments expired at now (see
	// RoleAssignment.Expired) and returns them.
	DeleteExpiredAssignments(ctx context.Context, now time.Time) ([]*RoleAssignment, error)

	// CreateToken stores a new API token (ErrExists when its ID is taken).
	CreateToken(ctx context.Context, t *APIToken) error
	GetToken(ctx context.Context, id string) (*APIToken, error)
	ListTokens(ctx context.Context) ([]*APIToken, error)
	DeleteToken(ctx context.Context, id string) error
	// DeleteExpiredTokens deletes the tokens expired at now (see
	// APIToken.Expired) and returns how many.
	DeleteExpiredTokens(ctx context.Context, now time.Time) (int, error)
	Close() error
}

// Change is one change a Watcher saw: of a cluster, a role, an assignment
// or a token (Kind is KindCluster, KindRole, KindAssignment, KindToken),
// or KindResync when changes may have gone unseen.
type Change struct {
	Kind, Name string
	Deleted    bool
	// Replaced: a cluster registered again or its certificates revoked
	// (another UID or certificate generation): its tunnels must close.
	Replaced bool
}

// KindResync: the watch broke; drop everything cached.
const KindResync = "resync"

// Watcher is a Store shared by several relays: Watch follows the changes
// every replica makes (the embedded store has one writer and is no
// Watcher).
type Watcher interface {
	Watch(ctx context.Context, fn func(Change))
}

// Pinger is a Store that can be unavailable while the relay runs (etcd
// without quorum): readiness asks it.
type Pinger interface {
	Ping(ctx context.Context) error
}
