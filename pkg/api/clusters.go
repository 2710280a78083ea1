package api

import "time"

// Connectivity statuses, as Azure Arc names them.
const (
	StatusConnecting = "Connecting" // registered, no heartbeat yet
	StatusConnected  = "Connected"  // a heartbeat within the relay's offline-after
	StatusOffline    = "Offline"    // was connected, no heartbeat since
	StatusExpired    = "Expired"    // the cluster's certificate has expired
)

// ResourceType is the type of a connected cluster, as in ARM.
const ResourceType = "Microsoft.Kubernetes/connectedClusters"

// ConnectedCluster is a cluster as the management API shows it: shaped like
// an ARM resource (Microsoft.Kubernetes/connectedClusters).
type ConnectedCluster struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Type       string            `json:"type"`
	Location   string            `json:"location"`
	Tags       map[string]string `json:"tags"`
	Etag       string            `json:"etag"`
	SystemData SystemData        `json:"systemData"`
	Properties ClusterProperties `json:"properties"`

	// RegistrationToken is present only in the answer to create and
	// registration-token calls: a one-time token for the agent's enrolment.
	RegistrationToken          string    `json:"registrationToken,omitempty"`
	RegistrationTokenExpiresAt time.Time `json:"registrationTokenExpiresAt,omitzero"`
}

// SystemData says when the resource was made.
type SystemData struct {
	CreatedAt      time.Time `json:"createdAt"`
	LastModifiedAt time.Time `json:"lastModifiedAt,omitzero"`
}

// ClusterProperties are the cluster's facts and status.
type ClusterProperties struct {
	ProvisioningState  string `json:"provisioningState"`
	ConnectivityStatus string `json:"connectivityStatus"`
	KubernetesVersion  string `json:"kubernetesVersion,omitempty"`
	AgentVersion       string `json:"agentVersion,omitempty"`
	TotalNodeCount     int    `json:"totalNodeCount"`
	TotalCoreCount     int    `json:"totalCoreCount"`
	Distribution       string `json:"distribution,omitempty"`
	Infrastructure     string `json:"infrastructure,omitempty"`
	// Agents is each agent role's health as last reported (see AgentRole).
	Agents []AgentRole `json:"agents,omitempty"`
	// LastConnectivityTime is the last heartbeat.
	LastConnectivityTime time.Time `json:"lastConnectivityTime,omitzero"`
	// ManagedIdentityCertificateExpirationTime is when the newest
	// certificate issued to the cluster expires.
	ManagedIdentityCertificateExpirationTime time.Time `json:"managedIdentityCertificateExpirationTime,omitzero"`
	// Tunnels is the number of agent tunnels up on this relay now.
	Tunnels int `json:"tunnels"`
	// Replicas, for a relay fleet, is every replica's tunnels of the
	// cluster now (this one's counted live, the others' from their
	// ownership records), those with none left out.
	Replicas []ReplicaTunnels `json:"replicas,omitempty"`
	UID      string           `json:"uid"`
	// Events are the latest status transitions, oldest first (show only).
	Events []Event `json:"events,omitempty"`
}

// ReplicaTunnels is one relay replica's tunnels of a cluster.
type ReplicaTunnels struct {
	Replica string `json:"replica"`
	Tunnels int    `json:"tunnels"`
}

// Event is a connectivity status transition.
type Event struct {
	Time   time.Time `json:"time"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
}

// ClusterList is the answer to a list call.
type ClusterList struct {
	Value []ConnectedCluster `json:"value"`
}

// CreateRequest is the body of POST ClustersPath.
type CreateRequest struct {
	Name string            `json:"name"`
	Tags map[string]string `json:"tags,omitempty"`
	// TokenTTLSeconds overrides the relay's registration token lifetime;
	// zero means the relay's default.
	TokenTTLSeconds int `json:"tokenTTLSeconds,omitempty"`
}

// TokenRequest is the body of POST RegistrationTokenPath.
type TokenRequest struct {
	// TokenTTLSeconds; zero means the relay's default.
	TokenTTLSeconds int `json:"tokenTTLSeconds,omitempty"`
}

// PatchRequest is the body of PATCH ClusterPath: the new tags (replacing
// the old). An If-Match header with the etag makes the change conditional
// (412 when it moved on).
type PatchRequest struct {
	Tags map[string]string `json:"tags"`
}

// Metadata describes a cluster as its sync role sees it. It is the wire
// format of HeartbeatRequest.Metadata.
type Metadata struct {
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	AgentVersion      string `json:"agentVersion,omitempty"`
	TotalNodeCount    int    `json:"totalNodeCount"`
	TotalCoreCount    int    `json:"totalCoreCount"`
	Distribution      string `json:"distribution,omitempty"`
	Infrastructure    string `json:"infrastructure,omitempty"`
	// Agents is the health of each agent role deployed by the agent chart
	// (one Deployment per role), as the sync role reads it.
	Agents []AgentRole `json:"agents,omitempty"`
}

// AgentRole is one agent role's health: its Deployment's replicas and the
// latest error its pods show (a waiting reason, or the message of the last
// termination).
type AgentRole struct {
	Role          string `json:"role"`
	Version       string `json:"version,omitempty"`
	Replicas      int    `json:"replicas"`
	ReadyReplicas int    `json:"readyReplicas"`
	// Ready: every desired replica is ready (and there is at least one).
	Ready     bool   `json:"ready"`
	LastError string `json:"lastError,omitempty"`
}

// HeartbeatRequest is the body of POST HeartbeatPath; Metadata is sent when
// it changed (and on an agent's first heartbeat).
type HeartbeatRequest struct {
	Metadata *Metadata `json:"metadata,omitempty"`
}

// HeartbeatResponse answers a heartbeat.
type HeartbeatResponse struct {
	ConnectivityStatus string `json:"connectivityStatus"`
}
