// Package guard is the Kubernetes API server's authentication and
// authorization webhook for Entra users, deciding with the role
// assignments the relay holds (Azure Arc's "Azure RBAC" for connected
// clusters).
//
//	POST /tokenreviews          authentication.k8s.io/v1 TokenReview: the token is verified by
//	                            package pkg/entra (the one kube-aad-proxy uses) and mapped to
//	                            user name, uid (oid), groups and extra {oid, tid}
//	POST /subjectaccessreviews  authorization.k8s.io/v1 SubjectAccessReview: mapped to one data
//	                            action (package guard/authz) and decided by the relay's checkAccess
//	                            (package guard/checkaccess) at the namespace or cluster scope
//
// The apiserver runs the authorizers Node, RBAC, then guard (a structured
// AuthorizationConfiguration, written by package guard/apiserverconfig), so
// Kubernetes RBAC decides first and guard decides only what RBAC did not
// allow. guard has no opinion on system: users (service accounts, nodes,
// controllers), on users without an oid extra, and on the users and groups
// on its skip lists; discovery paths can be allowed without a check.
//
// Decisions are cached (allowed and denied for separate TTLs, size-bounded;
// package guard/cache). A 4xx answer of the relay is cached as a denial; a
// 5xx, a timeout or a transport error is not cached and is answered per
// the failure mode (deny by default, or no opinion), and for a short
// back-off further cache misses are answered the same way without calling
// the relay, so that a down relay costs one timeout, not one per request.
// Cached decisions keep working while the relay is down.
//
// docs/guard.md is the operator's guide.
package guard
