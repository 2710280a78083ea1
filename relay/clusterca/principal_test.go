package clusterca

import (
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

func TestPrincipalCertificate(t *testing.T) {
	ca := newCA(t)
	csr, err := ParseCSR(csrPEM(t, elliptic.P256()))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p := api.Principal{Kind: api.PrincipalKindUser, ID: "0000-oid", Name: "dev@contoso.example", Groups: []string{"g1", "g2"}}
	_, cert, err := ca.IssuePrincipal(csr, p, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, notAfter, err := ca.VerifyPrincipal([]*x509.Certificate{cert}, now)
	if err != nil || got.Kind != p.Kind || got.ID != p.ID || got.Name != p.Name || !slices.Equal(slices.Sorted(slices.Values(got.Groups)), p.Groups) || got.Via != "certificate" {
		t.Fatalf("VerifyPrincipal = %+v, %v", got, err)
	}
	if !notAfter.Equal(cert.NotAfter) {
		t.Errorf("notAfter %s, want %s", notAfter, cert.NotAfter)
	}
	if _, _, err := ca.VerifyPrincipal([]*x509.Certificate{cert}, now.Add(2*time.Hour)); !errors.Is(err, ErrExpired) {
		t.Errorf("after expiry: %v, want ErrExpired", err)
	}
	if _, _, err := newCA(t).VerifyPrincipal([]*x509.Certificate{cert}, now); !errors.Is(err, ErrUnknownCA) {
		t.Errorf("another CA: %v, want ErrUnknownCA", err)
	}
	// A principal certificate is no cluster certificate, and the other way round.
	if _, err := ca.Verify([]*x509.Certificate{cert}, now); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("principal certificate as a cluster certificate: %v, want ErrNoIdentity", err)
	}
	_, ccert, err := ca.Issue(csr, Identity{Cluster: "prod", UID: "u", Generation: 1}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.VerifyPrincipal([]*x509.Certificate{ccert}, now); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("cluster certificate as a principal certificate: %v, want ErrNoIdentity", err)
	}
}

func TestPrincipalCertificateLimits(t *testing.T) {
	ca := newCA(t)
	csr, err := ParseCSR(csrPEM(t, elliptic.P256()))
	if err != nil {
		t.Fatal(err)
	}
	groups := make([]string, MaxCertificateGroups+1)
	for i := range groups {
		groups[i] = fmt.Sprint("g", i)
	}
	for _, p := range []api.Principal{
		{Kind: api.PrincipalKindUser, ID: "oid", Groups: groups},
		{Kind: "", ID: "oid"},
		{Kind: api.PrincipalKindUser, ID: ""},
	} {
		if _, _, err := ca.IssuePrincipal(csr, p, time.Now(), time.Hour); err == nil {
			t.Errorf("IssuePrincipal(%s/%s, %d groups) succeeded", p.Kind, p.ID, len(p.Groups))
		}
	}
}
