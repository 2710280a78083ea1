package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/clusteragent/identity/wire"
)

// fakeRelay is the relay's side of the wire contract, enough to test the
// agent: one-time tokens, a cluster CA, enrol and renew, and /whoami, which
// answers the serial of the client certificate presented.
type fakeRelay struct {
	url    string
	caPEM  []byte
	caFile string // caPEM on disk, for Config.RelayCAFile
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey

	lifetime atomic.Int64 // of issued certificates; a time.Duration

	mu          sync.Mutex
	tokens      map[string]*fakeToken
	renewedFrom []*big.Int // serials presented to /renew
	csrSubjects []string
	renewFail   *RelayError // when set, /renew answers with it

	enrolls, renews atomic.Int32
}

type fakeToken struct {
	cluster string
	used    bool
	expires time.Time
}

func newFakeRelay(t *testing.T) *fakeRelay {
	t.Helper()
	r := &fakeRelay{tokens: map[string]*fakeToken{}}
	r.lifetime.Store(int64(time.Hour))
	now := time.Now()
	var err error
	r.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		Subject:               pkix.Name{CommonName: "test cluster CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(72 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &r.caKey.PublicKey, r.caKey)
	if err != nil {
		t.Fatal(err)
	}
	if r.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	r.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	r.caFile = filepath.Join(t.TempDir(), "relay-ca.crt")
	if err := os.WriteFile(r.caFile, r.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: randSerial(t),
		Subject:      pkix.Name{CommonName: "relay"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(72 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}, r.ca, &srvKey.PublicKey, r.caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(r.ca)

	mux := http.NewServeMux()
	mux.HandleFunc("POST /agent/v1/enroll", r.enroll)
	mux.HandleFunc("POST /agent/v1/renew", r.renew)
	mux.HandleFunc("GET /agent/v1/whoami", func(w http.ResponseWriter, req *http.Request) {
		if len(req.TLS.PeerCertificates) == 0 {
			writeStatus(w, http.StatusUnauthorized, "Unauthorized", "client certificate required")
			return
		}
		fmt.Fprint(w, req.TLS.PeerCertificates[0].SerialNumber.String())
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func randSerial(t *testing.T) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// token registers a one-time token for cluster and returns it.
func (r *fakeRelay) token(cluster string, ttl time.Duration) string {
	b := make([]byte, 16)
	rand.Read(b)
	tok := fmt.Sprintf("%x", b)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens[tok] = &fakeToken{cluster: cluster, expires: time.Now().Add(ttl)}
	return tok
}

// tokenFile writes a new token for cluster into a file and returns its path.
func (r *fakeRelay) tokenFile(t *testing.T, cluster string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "registration-token")
	writeFile(t, f, r.token(cluster, time.Hour)+"\n")
	return f
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (r *fakeRelay) setRenewFailure(e *RelayError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.renewFail = e
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "status": "Failure",
		"message": msg, "reason": reason, "code": code,
	})
}

func (r *fakeRelay) enroll(w http.ResponseWriter, req *http.Request) {
	r.enrolls.Add(1)
	var in api.EnrollRequest
	if err := json.NewDecoder(req.Body).Decode(&in); err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	r.mu.Lock()
	tok := r.tokens[in.Token]
	var msg string
	switch {
	case tok == nil:
		msg = "invalid registration token"
	case tok.used:
		msg = "registration token already used"
	case time.Now().After(tok.expires):
		msg = fmt.Sprintf("registration token expired on %s: create a new one with `connectctl clusters token %s`", tok.expires.UTC().Format(time.RFC3339), tok.cluster)
	case tok.cluster != in.Cluster:
		msg = "registration token is for another cluster"
	default:
		tok.used = true
	}
	r.mu.Unlock()
	if msg != "" {
		writeStatus(w, http.StatusUnauthorized, "Unauthorized", msg)
		return
	}
	r.issue(w, in.CSR, tok.cluster)
}

func (r *fakeRelay) renew(w http.ResponseWriter, req *http.Request) {
	r.renews.Add(1)
	if len(req.TLS.PeerCertificates) == 0 {
		writeStatus(w, http.StatusUnauthorized, "Unauthorized", "client certificate required")
		return
	}
	peer := req.TLS.PeerCertificates[0]
	r.mu.Lock()
	fail := r.renewFail
	r.renewedFrom = append(r.renewedFrom, peer.SerialNumber)
	r.mu.Unlock()
	if fail != nil {
		writeStatus(w, fail.StatusCode, fail.Reason, fail.Message)
		return
	}
	var in api.RenewRequest
	if err := json.NewDecoder(req.Body).Decode(&in); err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	r.issue(w, in.CSR, peer.Subject.CommonName)
}

// issue signs the CSR for cluster: the relay, not the CSR, names the cluster.
func (r *fakeRelay) issue(w http.ResponseWriter, csrPEM, cluster string) {
	csr, err := wire.ParseCSR(csrPEM)
	if err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	r.mu.Lock()
	r.csrSubjects = append(r.csrSubjects, csr.Subject.CommonName)
	r.mu.Unlock()
	now := time.Now().Truncate(time.Second)
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cluster, Organization: []string{"clusterconnect:clusters"}},
		NotBefore:    now,
		NotAfter:     now.Add(time.Duration(r.lifetime.Load())),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}, r.ca, csr.PublicKey, r.caKey)
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	leaf, _ := x509.ParseCertificate(der)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(wire.NewResponse([]*x509.Certificate{leaf}, []*x509.Certificate{r.ca}))
}
