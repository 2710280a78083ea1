package api

import (
	"net/url"
	"regexp"
	"strings"
)

// Agent API paths, relative to the relay's base URL. Agents authenticate with
// the cluster certificate (mTLS) on every one but EnrollPath.
const (
	// TunnelPathPattern is where an agent opens a tunnel (a WebSocket
	// upgrade; see pkg/tunnel/SPEC.md). Use TunnelPath to build one.
	TunnelPathPattern = "/agent/v1/clusters/{name}/tunnel"
	EnrollPath        = "/agent/v1/enroll"
	RenewPath         = "/agent/v1/renew"
	HeartbeatPath     = "/agent/v1/heartbeat"
	CheckAccessPath   = "/agent/v1/checkaccess"
	// AgentPrefix starts every agent path.
	AgentPrefix = "/agent/"
)

// TunnelPath is the tunnel path of a cluster.
func TunnelPath(cluster string) string {
	return "/agent/v1/clusters/" + url.PathEscape(cluster) + "/tunnel"
}

// Management API paths.
const (
	ClustersPath        = "/api/v1/clusters"
	RoleDefinitionsPath = "/api/v1/roledefinitions"
	RoleAssignmentsPath = "/api/v1/roleassignments"
)

// ClusterPath is the management path of one cluster.
func ClusterPath(name string) string { return ClustersPath + "/" + url.PathEscape(name) }

// RegistrationTokenPath issues a new registration token for a cluster.
func RegistrationTokenPath(name string) string { return ClusterPath(name) + "/registration-token" }

// KubeconfigPath answers a cluster's relay kubeconfig (application/yaml).
func KubeconfigPath(name string) string { return ClusterPath(name) + "/kubeconfig" }

// RoleDefinitionPath is one role definition.
func RoleDefinitionPath(name string) string { return RoleDefinitionsPath + "/" + url.PathEscape(name) }

// RoleAssignmentPath is one role assignment.
func RoleAssignmentPath(id string) string { return RoleAssignmentsPath + "/" + url.PathEscape(id) }

// Data-path: kubectl reaches a cluster's apiserver under ClusterProxyPrefix;
// the relay removes the prefix and the cluster name.
const ClusterProxyPrefix = "/clusters/"

// ClusterServerURL is the kubeconfig server URL of a cluster on a relay.
func ClusterServerURL(relayURL, cluster string) string {
	return strings.TrimSuffix(relayURL, "/") + ClusterProxyPrefix + cluster
}

// Health endpoints every server has.
const (
	HealthzPath = "/healthz"
	ReadyzPath  = "/readyz"
	MetricsPath = "/metrics"
)

// MaxAgentBody bounds every agent API request and answer: a CSR, a
// certificate chain with its CA bundle, a heartbeat's metadata, or a
// checkAccess call with up to MaxCheckAccessGroups groups.
const MaxAgentBody = 1 << 20

// MaxManagementBody bounds a management API request body.
const MaxManagementBody = 64 << 10

// KubeTarget is the stream target for a cluster's Kubernetes API; the agent
// maps it to its configured upstream (the apiserver, or kube-aad-proxy).
const KubeTarget = "kube"

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ValidClusterName reports whether name can name a cluster: an RFC 1123 DNS
// label (lowercase letters, digits and '-', at most 63), as Kubernetes names
// are. Namespace names follow the same rule.
func ValidClusterName(name string) bool { return dnsLabel.MatchString(name) }
