// Package identity is the clusteridentityoperator role: it gives the agents
// of a cluster the client certificate the relay knows the cluster by.
//
// On first start the agent generates an ECDSA P-256 key (it never leaves the
// cluster), sends a certificate request with a one-time registration token to
// the relay's enrolment endpoint and stores key, certificate and the relay's
// CA bundle in a kubernetes.io/tls Secret in its namespace. Later starts load
// the Secret and do not enrol again. [Identity.Run] renews the certificate
// over mTLS at a fraction of its lifetime (two-thirds by default), with a new
// key each time, updates the Secret and hands the new certificate to new
// connections through [Identity.TLSConfig].
//
// The wire format with the relay is in package wire; relay refusals are
// *RelayError with the relay's message as it is.
//
// docs/identity.md describes the lifecycle for operators.
package identity
