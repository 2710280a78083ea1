package graph_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/aadproxy/graph"
	"github.com/clusterconnect/clusterconnect/test/oidc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewNeedsCredentialsAndHTTPS(t *testing.T) {
	if _, err := graph.New(nil); err == nil || !strings.Contains(err.Error(), "client ID and secret") {
		t.Errorf("nil config: %v", err)
	}
	if _, err := graph.New(&graph.Config{ClientID: "a", ClientSecret: "s", GraphURL: "http://graph.local"}); err == nil {
		t.Error("plain http Graph URL accepted")
	}
}

// TestMemberGroupsCachedPerUser: one app token and one Graph call per user
// within the TTL; an expired entry is fetched again.
func TestMemberGroupsCachedPerUser(t *testing.T) {
	iss, err := oidc.Start(&oidc.Options{Clients: map[string]string{"app": "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(iss.CAPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	iss.SetMemberGroups("u1", []string{"g1", "g2"})
	iss.SetMemberGroups("u2", nil)
	r, err := graph.New(&graph.Config{GraphURL: iss.GraphURL(), IssuerURL: iss.URL, ClientID: "app", ClientSecret: "secret", HTTPClient: hc, CacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		gs, err := r.MemberGroups(t.Context(), "t", "u1")
		if err != nil || !slices.Equal(gs, []string{"g1", "g2"}) {
			t.Fatalf("u1: %v %v", gs, err)
		}
	}
	if gs, err := r.MemberGroups(t.Context(), "t", "u2"); err != nil || len(gs) != 0 || gs == nil {
		t.Fatalf("u2 (no groups): %#v %v", gs, err)
	}
	st := iss.Stats()
	if st.GraphCalls != 2 || st.TokenCalls["client_credentials"] != 1 {
		t.Errorf("graph calls %d, app tokens %d; want 2 and 1", st.GraphCalls, st.TokenCalls["client_credentials"])
	}
	short, _ := graph.New(&graph.Config{GraphURL: iss.GraphURL(), IssuerURL: iss.URL, ClientID: "app", ClientSecret: "secret", HTTPClient: hc, CacheTTL: time.Nanosecond})
	short.MemberGroups(t.Context(), "t", "u1")
	short.MemberGroups(t.Context(), "t", "u1")
	if n := iss.Stats().GraphCalls; n != 4 {
		t.Errorf("with an expired cache: %d Graph calls in all, want 4", n)
	}
}
