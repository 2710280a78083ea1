package relay_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/relay/agentapi"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// dialTunnel tries one tunnel connection for cluster with tlsCfg and returns
// the relay's refusal (status, message), or 101 on success.
func dialTunnel(t *testing.T, e *env, cluster string, tlsCfg *tls.Config) (int, string) {
	t.Helper()
	s, err := tunnel.Dial(context.Background(), e.ts.URL+"/agent/v1/clusters/"+cluster+"/tunnel", &tunnel.DialOptions{TLSConfig: tlsCfg})
	if err == nil {
		s.Close()
		return 101, ""
	}
	var re *tunnel.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("dial: %v", err)
	}
	return re.StatusCode, re.Message
}

func TestRegistrationTokenIsOneTime(t *testing.T) {
	e := newEnv(t)
	token := e.register("a")
	if code, msg, _ := e.enroll("a", token); code != 200 {
		t.Fatalf("first enrolment: %d %s", code, msg)
	}
	if code, msg, _ := e.enroll("a", token); code != 401 || !strings.Contains(msg, "registration token already used") {
		t.Fatalf("reused token: %d %q", code, msg)
	}
	if code, msg, _ := e.enroll("a", "made-up"); code != 401 || !strings.Contains(msg, "not valid for cluster a") {
		t.Fatalf("wrong token: %d %q", code, msg)
	}
	if code, msg, _ := e.enroll("nope", token); code != 404 || !strings.Contains(msg, "not registered") {
		t.Fatalf("unknown cluster: %d %q", code, msg)
	}
}

func TestRegistrationTokenExpires(t *testing.T) {
	e := newEnv(t)
	token := e.register("b")
	e.advance(61 * time.Minute) // default lifetime 1 h
	code, msg, _ := e.enroll("b", token)
	if code != 401 || !strings.Contains(msg, "registration token expired on") || !strings.Contains(msg, "connectctl clusters token b") {
		t.Fatalf("expired token: %d %q", code, msg)
	}
	// A new token works, and the old one does not come back.
	code, b := e.api("POST", "/api/v1/clusters/b/registration-token", `{"tokenTTLSeconds": 60}`)
	if code != 200 {
		t.Fatalf("new token: %d %s", code, b)
	}
	var v api.ConnectedCluster
	json.Unmarshal(b, &v)
	if code, msg, _ := e.enroll("b", v.RegistrationToken); code != 200 {
		t.Fatalf("enrol with the new token: %d %s", code, msg)
	}
}

func TestTokenOfDeletedClusterRefused(t *testing.T) {
	e := newEnv(t)
	token := e.register("gone")
	e.api("DELETE", "/api/v1/clusters/gone", "")
	if code, msg, _ := e.enroll("gone", token); code != 404 {
		t.Fatalf("token of a deleted cluster: %d %q", code, msg)
	}
	// Re-created with the same name: the old token is not valid for it.
	e.register("gone")
	if code, _, _ := e.enroll("gone", token); code != 401 {
		t.Fatalf("token of the earlier cluster of the same name: %d", code)
	}
}

func TestBadCSRRefused(t *testing.T) {
	e := newEnv(t)
	token := e.register("c")
	for _, body := range []string{
		`{"cluster":"c","token":"` + token + `","csr":"not pem"}`,
		`{"cluster":"c","token":"` + token + `"`,
		`{"cluster":"c","token":"` + token + `","csr":"x","extra":1}`,
		`{"cluster":"c","csr":"` + strings.Repeat("A", 70<<10) + `"}`,
	} {
		resp, err := e.ts.Client().Post(e.ts.URL+"/agent/v1/enroll", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		code, _, msg := status(t, resp)
		if code != 400 {
			t.Errorf("body %.60q: %d %s", body, code, msg)
		}
	}
	// None of that used up the token.
	if code, msg, _ := e.enroll("c", token); code != 200 {
		t.Fatalf("token after bad requests: %d %s", code, msg)
	}
}

func TestTunnelNeedsTheClustersOwnCertificate(t *testing.T) {
	e := newEnv(t)
	a := e.identity("a")
	e.identity("b")
	if code, msg := dialTunnel(t, e, "a", a); code != 101 {
		t.Fatalf("own certificate: %d %s", code, msg)
	}
	if code, msg := dialTunnel(t, e, "b", a); code != 403 || !strings.Contains(msg, "certificate of cluster a cannot serve cluster b") {
		t.Fatalf("A's certificate for B: %d %q", code, msg)
	}
	noCert := &tls.Config{RootCAs: a.RootCAs}
	if code, msg := dialTunnel(t, e, "a", noCert); code != 401 || !strings.Contains(msg, "no client certificate") {
		t.Fatalf("no certificate: %d %q", code, msg)
	}
	// A self-signed certificate that claims cluster a's identity.
	leaf, _ := x509.ParseCertificate(a.Certificates[0].Certificate[0])
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "a"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{leaf.URIs[0]}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	self := &tls.Config{RootCAs: a.RootCAs, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	if code, msg := dialTunnel(t, e, "a", self); code != 401 || !strings.Contains(msg, "not issued by this relay's cluster CA") {
		t.Fatalf("self-signed: %d %q", code, msg)
	}
}

func TestReRegistrationRevokesOlderCertificates(t *testing.T) {
	e := newEnv(t)
	old := e.identity("r")
	_, b := e.api("POST", "/api/v1/clusters/r/registration-token", "")
	var v api.ConnectedCluster
	json.Unmarshal(b, &v)
	if code, msg, _ := e.enroll("r", v.RegistrationToken); code != 200 {
		t.Fatalf("re-enrol: %d %s", code, msg)
	}
	if code, msg := dialTunnel(t, e, "r", old); code != 401 || !strings.Contains(msg, "revoked") {
		t.Fatalf("certificate of the earlier registration: %d %q", code, msg)
	}
}

func TestDeleteRevokesAndClosesTunnels(t *testing.T) {
	e := newEnv(t)
	id := e.identity("d")
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	e.agent("d", id, up.URL, 2)
	e.waitConnected("d", 2)
	e.api("DELETE", "/api/v1/clusters/d", "")
	e.waitConnected("d", 0)
	if code, _ := dialTunnel(t, e, "d", id); code != 404 {
		t.Fatalf("tunnel after delete: %d", code)
	}
	// Re-created with the same name, the old certificate is still refused.
	e.register("d")
	if code, msg := dialTunnel(t, e, "d", id); code != 401 || !strings.Contains(msg, "deleted") {
		t.Fatalf("old certificate on the re-created cluster: %d %q", code, msg)
	}
}

func TestRenewAndExpiry(t *testing.T) {
	e := newEnv(t)
	id := e.identity("x")
	// Renew over mTLS with the current certificate.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	body, _ := json.Marshal(api.RenewRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	mtls := &http.Client{Transport: &http.Transport{TLSClientConfig: id}}
	defer mtls.CloseIdleConnections()
	resp, err := mtls.Post(e.ts.URL+"/agent/v1/renew", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("renew: %d %s", resp.StatusCode, b)
	}
	var cr api.CertificateResponse
	json.Unmarshal(b, &cr)
	blk, _ := pem.Decode([]byte(cr.Certificate))
	leaf, _ := x509.ParseCertificate(blk.Bytes)
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		t.Fatal("renewed certificate is not for the new key")
	}
	// Without a certificate renew is refused.
	resp, _ = e.client().Post(e.ts.URL+"/agent/v1/renew", "application/json", strings.NewReader(string(body)))
	if code, reason, _ := status(t, resp); code != 401 || reason != "NoCertificate" {
		t.Fatalf("renew without a certificate: %d %s", code, reason)
	}
	// After 90 days the certificate is expired: the cluster shows Expired and
	// the agent is told exactly what to do.
	e.advance(91 * 24 * time.Hour)
	if code, msg := dialTunnel(t, e, "x", id); code != 401 || !strings.Contains(msg, "certificate of cluster x expired on") || !strings.Contains(msg, "re-register") {
		t.Fatalf("expired certificate: %d %q", code, msg)
	}
	_, b = e.api("GET", "/api/v1/clusters/x", "")
	var v api.ConnectedCluster
	json.Unmarshal(b, &v)
	if v.Properties.ConnectivityStatus != "Expired" {
		t.Fatalf("status after expiry = %q", v.Properties.ConnectivityStatus)
	}
}

// reregisteringAuth authenticates like the relay does and, the first time
// a tunnel authenticates, re-registers its cluster before the tunnel joins
// the pool: the race between a connect and a re-registration.
type reregisteringAuth struct {
	inner   agentapi.CertAuthenticator
	once    sync.Once
	during  func()
	refused chan struct{} // a tunnel connect was refused
}

func (a *reregisteringAuth) AuthenticateAgent(ctx context.Context, r *http.Request, c *store.Cluster) (time.Time, error) {
	exp, err := a.inner.AuthenticateAgent(ctx, r, c)
	if strings.HasSuffix(r.URL.Path, "/tunnel") {
		if err == nil {
			a.once.Do(a.during)
		} else {
			select {
			case a.refused <- struct{}{}:
			default:
			}
		}
	}
	return exp, err
}

// A tunnel that authenticated just before its cluster registered again
// (which revokes the older certificates) is closed once it is in the pool,
// rather than serving with a revoked certificate until it expires.
func TestTunnelRacingReregistrationIsClosed(t *testing.T) {
	auth := &reregisteringAuth{refused: make(chan struct{}, 1)}
	e := newEnvConfig(t, relay.Config{Tunnel: testTunnel(), Agents: auth})
	auth.inner = agentapi.CertAuthenticator{CA: e.ca, Now: e.clock}
	id := e.identity("r1")
	auth.during = func() {
		_, b := e.api("POST", "/api/v1/clusters/r1/registration-token", "")
		var v api.ConnectedCluster
		json.Unmarshal(b, &v)
		if code, msg, _ := e.enroll("r1", v.RegistrationToken); code != 200 {
			t.Errorf("re-enrol: %d %s", code, msg)
		}
	}
	e.agent("r1", id, upstream(t, http.NotFoundHandler()).URL, 1)
	// The agent redials only once its tunnel is closed; the redial, with the
	// revoked certificate, is refused.
	select {
	case <-auth.refused:
	case <-time.After(10 * time.Second):
		t.Fatalf("the tunnel with the revoked certificate is still up (%d tunnels)", e.srv.Connected("r1"))
	}
	// The closed tunnel leaves the pool once its session has ended.
	e.waitConnected("r1", 0)
}
