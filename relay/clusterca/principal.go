package clusterca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

// Relay client certificates ("token mode"): a principal the relay verified
// (an Entra user, an API token, the admin) gets a short-lived client
// certificate to present beside a bearer token that is meant for the
// cluster's API server, not for the relay. They are signed by the same CA as
// cluster certificates but carry a principal URI
// (clusterconnect://principal/<kind>/<id>) instead of a cluster URI, so
// neither can pass for the other: Verify finds no cluster in a principal
// certificate, VerifyPrincipal no principal in a cluster certificate.

// MaxCertificateGroups bounds the groups a principal certificate carries;
// a principal in more groups is refused a certificate (its group-based
// assignments could not be honoured).
const MaxCertificateGroups = 200

// principalOrg marks principal certificates in Subject.Organization; the
// groups are the OrganizationalUnits (a DER SET: their order is not kept).
const principalOrg = "clusterconnect:principals"

func principalURI(p api.Principal) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: "principal", Path: "/" + p.Kind + "/" + p.ID}
}

// IssuePrincipal signs a client certificate for the CSR's key that
// identifies p (kind, ID, name and groups). It is valid from now for lifetime.
func (ca *CA) IssuePrincipal(csr *x509.CertificateRequest, p api.Principal, now time.Time, lifetime time.Duration) ([]byte, *x509.Certificate, error) {
	if p.Kind == "" || p.ID == "" || strings.Contains(p.Kind, "/") {
		return nil, nil, fmt.Errorf("principal %q/%q cannot be put into a certificate", p.Kind, p.ID)
	}
	if len(p.Groups) > MaxCertificateGroups {
		return nil, nil, fmt.Errorf("principal %s is in %d groups; a relay client certificate carries at most %d: use an Entra token instead", p.ID, len(p.Groups), MaxCertificateGroups)
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: p.Name, Organization: []string{principalOrg}, OrganizationalUnit: p.Groups},
		NotBefore:    now.Add(-min(time.Minute, lifetime/10)),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{principalURI(p)},
	}
	return ca.sign(tmpl, csr)
}

// VerifyPrincipal checks that chain[0] is a principal certificate of this CA,
// valid at now, and returns the principal (Via "certificate") and its
// NotAfter. Errors wrap ErrUnknownCA, ErrNoIdentity, ErrExpired or ErrNotYet.
func (ca *CA) VerifyPrincipal(chain []*x509.Certificate, now time.Time) (api.Principal, time.Time, error) {
	if len(chain) == 0 {
		return api.Principal{}, time.Time{}, ErrNoIdentity
	}
	leaf := chain[0]
	var p api.Principal
	for _, u := range leaf.URIs {
		if u.Scheme != uriScheme || u.Host != "principal" {
			continue
		}
		kind, id, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		if ok && kind != "" && id != "" {
			p = api.Principal{Kind: kind, ID: id, Name: leaf.Subject.CommonName, Via: "certificate"}
		}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	at := now
	if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		at = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.pool, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return api.Principal{}, time.Time{}, fmt.Errorf("%w: %w", ErrUnknownCA, err)
	}
	if p.ID == "" || !slices.Equal(leaf.Subject.Organization, []string{principalOrg}) {
		return api.Principal{}, time.Time{}, ErrNoIdentity
	}
	p.Groups = slices.Clone(leaf.Subject.OrganizationalUnit)
	if now.After(leaf.NotAfter) {
		return p, leaf.NotAfter, fmt.Errorf("%w on %s", ErrExpired, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return p, leaf.NotAfter, fmt.Errorf("%w before %s (check the clocks)", ErrNotYet, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return p, leaf.NotAfter, nil
}
