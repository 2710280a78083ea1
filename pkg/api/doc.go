// Package api is every HTTP contract between the parts of clusterconnect:
// the relay's management API (connected clusters, role definitions, role
// assignments, kubeconfigs), the agent API (tunnel, enrolment, renewal,
// heartbeat, checkAccess), their paths, body limits, data-action names and
// Status reasons.
//
// Both sides import it — the relay's handlers, the in-cluster agent roles,
// guard and connectctl — and nobody imports the other side's internals. It
// uses the standard library only, so that a client (connectctl) links none of
// the relay's storage, tunnel or metrics code. Storage types live in
// relay/store and are converted at the relay's edge.
//
// Errors on every path are Kubernetes Status objects (kind Status, apiVersion
// v1, status Failure, message, reason, code); the message says what to do.
package api
