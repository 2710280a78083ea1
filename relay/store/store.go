// Package store keeps the relay's state: the registered clusters and their
// agent credentials. Bolt is the embedded store of a single relay; a shared
// etcd store for many relays implements the same interface.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned for a cluster that is not registered.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating a cluster whose name is taken.
var ErrExists = errors.New("already exists")

// Cluster is a registered cluster.
type Cluster struct {
	Name      string    `json:"name"`
	UID       string    `json:"uid"`
	CreatedAt time.Time `json:"createdAt"`
	// AgentSecretHash is the SHA-256 of the agent's secret (hex); the secret
	// itself is shown once, at registration, and never stored.
	AgentSecretHash string `json:"agentSecretHash"`
}

// Store is the relay's persistent state. Every method is safe for concurrent use.
type Store interface {
	CreateCluster(ctx context.Context, c *Cluster) error
	GetCluster(ctx context.Context, name string) (*Cluster, error)
	ListClusters(ctx context.Context) ([]*Cluster, error)
	DeleteCluster(ctx context.Context, name string) error
	Close() error
}
