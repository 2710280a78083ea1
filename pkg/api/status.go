package api

// Status reasons the relay and agents put into Kubernetes Status objects
// beyond Kubernetes' own (NotFound, ServiceUnavailable, ...). They are
// machine-readable and double as metric labels.
const (
	// Agent credentials refused.
	ReasonNoCertificate      = "NoCertificate"
	ReasonUnknownCA          = "UnknownCA"
	ReasonCertificateExpired = "CertificateExpired"
	ReasonCertificateRevoked = "CertificateRevoked"
	ReasonClusterDeleted     = "ClusterDeleted"
	ReasonWrongCluster       = "WrongCluster"

	// ReasonPreconditionFailed: an If-Match etag no longer matches.
	ReasonPreconditionFailed = "Conflict"
	// ReasonBadGateway: the agent could not reach its upstream.
	ReasonBadGateway = "BadGateway"
	// ReasonClusterBusy: every tunnel of the cluster refused the stream
	// (too many streams, or shutting down); retry after Retry-After.
	ReasonClusterBusy = "ClusterBusy"

	// Front door refusals.
	// ReasonUnauthenticated: no relay identity, or one that did not verify.
	ReasonUnauthenticated = "Unauthorized"
	// ReasonForbidden: a verified caller without the action it needs.
	ReasonForbidden = "Forbidden"
	// ReasonCallerLimited: the caller is over its request-rate or
	// concurrency limit; retry after Retry-After.
	ReasonCallerLimited = "CallerRateLimited"
	// ReasonClusterLimited: the cluster is over its limits (all callers).
	ReasonClusterLimited = "ClusterRateLimited"
)

// Status is the part of a Kubernetes Status object clients read.
type Status struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
	Code    int    `json:"code"`
}
