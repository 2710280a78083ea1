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
// A bearer token that is not an Entra token of the configured issuer (a
// service-account token) is passed through unchanged, its Impersonate-*
// headers included (the apiserver authorizes impersonation by RBAC), over a
// connection that carries none of the proxy's credentials, for the
// apiserver to judge. Impersonate-* headers of Entra users (whom the proxy
// impersonates itself) and of requests without a token are refused (403).
// X-Remote-* headers are never forwarded. X-Forwarded-For (which the relay
// sets to the client's address) is forwarded with the proxy's peer
// appended, so that the apiserver's audit log records the client. Refusals
// are Kubernetes Status objects: 401 with the reason for bad tokens, 403
// for refused impersonation, 503 when the issuer cannot be reached. Every request gets one audit log line
// (mode, user, group count, verb, path, status, latency), never token
// contents. docs/aadproxy.md is the operator's guide.
package aadproxy
