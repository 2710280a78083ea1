package api

// EnrollRequest is the body of POST EnrollPath (no client certificate): the
// one-time registration token and a CSR for a key the agent made and keeps.
type EnrollRequest struct {
	Cluster string `json:"cluster"`
	Token   string `json:"token"`
	CSR     string `json:"csr"` // PEM CERTIFICATE REQUEST
}

// RenewRequest is the body of POST RenewPath (mTLS with the current
// certificate).
type RenewRequest struct {
	CSR string `json:"csr"` // PEM CERTIFICATE REQUEST
}

// CertificateResponse answers enrol and renew.
type CertificateResponse struct {
	// Certificate is the PEM leaf, then any intermediates.
	Certificate string `json:"certificate"`
	// CABundle holds the PEM CA certificates the agent trusts for the relay.
	CABundle string `json:"caBundle"`
	// NotAfter is the leaf's NotAfter, RFC 3339.
	NotAfter string `json:"notAfter"`
}
