// Package aadproxy is kube-aad-proxy: it sits between the clusterconnect
// agent and the Kubernetes API server, verifies the caller's Microsoft
// Entra ID token (package pkg/entra) and forwards the request with the
// proxy's own credentials, impersonating the caller:
//
//	Impersonate-User:       <upn | preferred_username | oid>
//	Impersonate-Group:      <each group object ID>, system:authenticated
//	Impersonate-Extra-oid:  <oid>
//	Impersonate-Extra-tid:  <tid>
//
// Client-sent Impersonate-* headers are refused (403) and, like
// Authorization, never forwarded. A bearer token that is not an Entra token
// of the configured issuer (a service-account token) is passed through
// unchanged over a connection that carries none of the proxy's credentials,
// for the apiserver to judge. Refusals are Kubernetes Status objects: 401
// with the reason for bad tokens, 403 for impersonation attempts, 503 when
// the issuer cannot be reached. Every request gets one audit log line
// (mode, user, group count, verb, path, status, latency), never token
// contents. docs/aadproxy.md is the operator's guide.
package aadproxy
