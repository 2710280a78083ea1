package identity

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
)

// setup is one test's relay, API server namespace and cluster name.
type setup struct {
	t       *testing.T
	relay   *fakeRelay
	cs      kubernetes.Interface
	ns      string
	cluster string
}

func newSetup(t *testing.T) *setup {
	cs, ns := kube(t)
	return &setup{t: t, relay: newFakeRelay(t), cs: cs, ns: ns, cluster: "c-" + ns}
}

// identity returns an Identity with the test's defaults changed by mod.
func (s *setup) identity(tokenFile string, mod func(*Config)) *Identity {
	s.t.Helper()
	cfg := Config{
		RelayURL:              s.relay.url,
		Cluster:               s.cluster,
		RegistrationTokenFile: tokenFile,
		RelayCAFile:           s.relay.caFile,
		Client:                s.cs,
		Namespace:             s.ns,
		Logger:                testLogger(s.t, nil),
	}
	if mod != nil {
		mod(&cfg)
	}
	id, err := New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return id
}

func (s *setup) secret() *corev1.Secret {
	s.t.Helper()
	sec, err := s.cs.CoreV1().Secrets(s.ns).Get(s.t.Context(), DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	return sec
}

// enrolled returns an Identity that has enrolled.
func (s *setup) enrolled() *Identity {
	s.t.Helper()
	id := s.identity(s.relay.tokenFile(s.t, s.cluster), nil)
	if err := id.Ensure(s.t.Context()); err != nil {
		s.t.Fatal(err)
	}
	return id
}

func TestEnrolStoresSecret(t *testing.T) {
	s := newSetup(t)
	id := s.identity(s.relay.tokenFile(t, s.cluster), nil)
	if id.Certificate() != nil || !id.NotAfter().IsZero() {
		t.Fatal("certificate before Ensure")
	}
	if err := id.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	sec := s.secret()
	if sec.Type != corev1.SecretTypeTLS {
		t.Errorf("type %q, want %q", sec.Type, corev1.SecretTypeTLS)
	}
	for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if len(sec.Data[k]) == 0 {
			t.Errorf("Secret lacks %s", k)
		}
	}
	if sec.Labels["app.kubernetes.io/managed-by"] != "clusterconnect" {
		t.Errorf("labels %v", sec.Labels)
	}
	if sec.Annotations["clusterconnect.io/cluster"] != s.cluster {
		t.Errorf("annotations %v", sec.Annotations)
	}
	if string(sec.Data["ca.crt"]) != string(s.relay.caPEM) {
		t.Error("ca.crt is not the relay's CA bundle")
	}
	pair, err := tls.X509KeyPair(sec.Data["tls.crt"], sec.Data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	pub := pair.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !pub.Equal(pair.PrivateKey.(crypto.Signer).Public()) {
		t.Error("the Secret's certificate is not for its key")
	}
	if !pair.Leaf.Equal(id.Certificate().Leaf) {
		t.Error("the Secret's certificate is not the current one")
	}
	if !id.NotAfter().Equal(pair.Leaf.NotAfter) {
		t.Errorf("NotAfter %s, certificate's %s", id.NotAfter(), pair.Leaf.NotAfter)
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool(s.relay.ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued certificate does not verify: %v", err)
	}
	if got := s.relay.csrSubjects; len(got) != 1 || got[0] != s.cluster {
		t.Errorf("CSR subjects %q, want [%q]", got, s.cluster)
	}
	select {
	case <-id.Rotated():
		t.Error("Rotated fired for the first certificate")
	default:
	}
	// The certificate authenticates the cluster to the relay.
	c := id.HTTPClient()
	defer c.CloseIdleConnections()
	if got := whoami(t, c, s.relay.url); got != pair.Leaf.SerialNumber.String() {
		t.Errorf("relay saw serial %s, want %s", got, pair.Leaf.SerialNumber)
	}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func whoami(t *testing.T, c *http.Client, relay string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, relay+"/agent/v1/whoami", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("whoami: HTTP %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

func TestRestartReusesSecret(t *testing.T) {
	s := newSetup(t)
	first := s.enrolled()
	// A restart: no token any more, and none needed.
	id := s.identity(filepath.Join(t.TempDir(), "gone"), nil)
	if err := id.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := s.relay.enrolls.Load(); n != 1 {
		t.Errorf("%d enrolments, want 1", n)
	}
	if !id.Certificate().Leaf.Equal(first.Certificate().Leaf) {
		t.Error("the restarted agent does not use the stored certificate")
	}
	// Nor does it need RelayCAFile: the Secret's ca.crt verifies the relay.
	id = s.identity("", func(c *Config) { c.RelayCAFile = "" })
	if err := id.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := id.HTTPClient()
	defer c.CloseIdleConnections()
	if got, want := whoami(t, c, s.relay.url), first.Certificate().Leaf.SerialNumber.String(); got != want {
		t.Errorf("relay saw serial %s, want %s", got, want)
	}
}

func TestEnrolWithoutToken(t *testing.T) {
	s := newSetup(t)
	empty := filepath.Join(t.TempDir(), "empty")
	writeFile(t, empty, "\n")
	for _, tc := range []struct{ name, file, want string }{
		{"not configured", "", "no registration token file is configured"},
		{"missing", filepath.Join(t.TempDir(), "token"), "does not exist"},
		{"empty", empty, "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.identity(tc.file, nil).Ensure(t.Context())
			if !errors.Is(err, ErrNoRegistrationToken) {
				t.Fatalf("err %v, want ErrNoRegistrationToken", err)
			}
			for _, want := range []string{tc.want, "there is no Secret " + s.ns + "/" + DefaultSecretName, "connectctl clusters token " + s.cluster} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
	if n := s.relay.enrolls.Load(); n != 0 {
		t.Errorf("%d enrolments without a token", n)
	}
}

func TestRelayErrorVerbatim(t *testing.T) {
	s := newSetup(t)
	file := s.relay.tokenFile(t, s.cluster)
	if err := s.identity(file, nil).Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	expired := s.relay.token(s.cluster, -time.Minute)
	expiredFile := filepath.Join(t.TempDir(), "expired")
	writeFile(t, expiredFile, expired)

	for _, tc := range []struct{ name, file, want string }{
		{"reused", file, "registration token already used"},
		{"expired", expiredFile, "registration token expired on "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A new namespace: no Secret, so the agent must enrol.
			s2 := *s
			s2.t = t
			_, s2.ns = kube(t)
			err := s2.identity(tc.file, nil).Ensure(t.Context())
			var re *RelayError
			if !errors.As(err, &re) {
				t.Fatalf("err %v, want a *RelayError", err)
			}
			if re.StatusCode != http.StatusUnauthorized || re.Reason != "Unauthorized" || !strings.HasPrefix(re.Message, tc.want) {
				t.Errorf("RelayError %+v, want 401 %q", re, tc.want)
			}
			if tc.name == "expired" && !strings.HasSuffix(re.Message, ": create a new one with `connectctl clusters token "+s.cluster+"`") {
				t.Errorf("message %q is not the relay's", re.Message)
			}
			if !strings.Contains(err.Error(), re.Message) {
				t.Errorf("error %q does not show the relay's message", err)
			}
			t.Log(err)
		})
	}
}

func TestRenewal(t *testing.T) {
	s := newSetup(t)
	s.relay.lifetime.Store(int64(3 * time.Second))
	first := s.enrolled()
	old := first.Certificate()

	// A restarted agent renews what the first one stored, trusting the relay
	// through the Secret's ca.crt alone.
	id := s.identity("", func(c *Config) { c.RelayCAFile = "" })
	if err := id.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	tlsCfg := id.TLSConfig() // taken before the renewal
	if tlsCfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("MinVersion %x", tlsCfg.MinVersion)
	}
	client := id.HTTPClient()
	defer client.CloseIdleConnections()
	if got := whoami(t, client, s.relay.url); got != old.Leaf.SerialNumber.String() {
		t.Fatalf("relay saw %s before the renewal, want %s", got, old.Leaf.SerialNumber)
	}

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { id.Run(ctx) })
	select {
	case <-id.Rotated():
	case <-time.After(30 * time.Second):
		t.Fatal("no renewal")
	}
	cancel()
	wg.Wait()

	cur := id.Certificate()
	if cur.Leaf.Equal(old.Leaf) {
		t.Fatal("Rotated fired, the certificate is the same")
	}
	if cur.PrivateKey.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(old.PrivateKey.(crypto.Signer).Public()) {
		t.Error("renewal kept the key")
	}
	if !id.NotAfter().After(old.Leaf.NotAfter) {
		t.Errorf("NotAfter %s not after %s", id.NotAfter(), old.Leaf.NotAfter)
	}
	s.relay.mu.Lock()
	from := s.relay.renewedFrom
	s.relay.mu.Unlock()
	if len(from) == 0 || from[0].Cmp(old.Leaf.SerialNumber) != 0 {
		t.Errorf("renewal presented serials %v, want %s first", from, old.Leaf.SerialNumber)
	}
	pair, err := tls.X509KeyPair(s.secret().Data["tls.crt"], s.secret().Data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	if !pair.Leaf.Equal(cur.Leaf) {
		t.Error("the Secret does not hold the renewed certificate")
	}
	got, err := tlsCfg.GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil || !got.Leaf.Equal(cur.Leaf) {
		t.Errorf("GetClientCertificate of an earlier TLSConfig returned %v (%v), want the renewed certificate", got.Leaf.SerialNumber, err)
	}
	if got := whoami(t, client, s.relay.url); got != cur.Leaf.SerialNumber.String() {
		t.Errorf("HTTPClient presented %s after the renewal, want %s", got, cur.Leaf.SerialNumber)
	}
}

func TestExpiredWithoutToken(t *testing.T) {
	s := newSetup(t)
	notAfter := s.enrolled().NotAfter()
	file := filepath.Join(t.TempDir(), "token")
	id := s.identity(file, func(c *Config) {
		c.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	})
	err := id.Ensure(t.Context())
	want := fmt.Sprintf("certificate of cluster %s expired on %s: re-register the cluster: run `connectctl clusters token %s`, put the token in %s, and restart the agent",
		s.cluster, notAfter.UTC().Format(time.RFC3339), s.cluster, file)
	if err == nil || err.Error() != want {
		t.Fatalf("error\n %v\nwant\n %s", err, want)
	}
	var ee *ExpiredError
	if !errors.As(err, &ee) || !ee.NotAfter.Equal(notAfter) {
		t.Errorf("err %#v, want an *ExpiredError", err)
	}
	if n := s.relay.enrolls.Load(); n != 1 {
		t.Errorf("%d enrolments, want 1", n)
	}
}

func TestExpiredWithToken(t *testing.T) {
	s := newSetup(t)
	old := s.enrolled().Certificate()
	s.relay.lifetime.Store(int64(24 * time.Hour))
	id := s.identity(s.relay.tokenFile(t, s.cluster), func(c *Config) {
		c.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	})
	if err := id.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := s.relay.enrolls.Load(); n != 2 {
		t.Errorf("%d enrolments, want 2", n)
	}
	pair, err := tls.X509KeyPair(s.secret().Data["tls.crt"], s.secret().Data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	if pair.Leaf.Equal(old.Leaf) || !pair.Leaf.Equal(id.Certificate().Leaf) {
		t.Error("the Secret does not hold the new certificate")
	}

	// An expired certificate and a spent token: both problems are named.
	id = s.identity(filepath.Join(t.TempDir(), "token"), func(c *Config) {
		c.Now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	})
	writeFile(t, id.cfg.RegistrationTokenFile, "spent")
	err = id.Ensure(t.Context())
	var ee *ExpiredError
	var re *RelayError
	if !errors.As(err, &ee) || !errors.As(err, &re) || re.Message != "invalid registration token" {
		t.Errorf("err %v, want an *ExpiredError and the relay's refusal", err)
	}
}

func TestSecretOfAnotherCluster(t *testing.T) {
	s := newSetup(t)
	s.enrolled()
	s.cluster += "-other"
	err := s.identity("", nil).Ensure(t.Context())
	if !errors.Is(err, ErrNoRegistrationToken) || !strings.Contains(err.Error(), "holds the identity of cluster") {
		t.Fatalf("err %v, want the Secret's cluster and no token named", err)
	}
	id := s.identity(s.relay.tokenFile(t, s.cluster), nil)
	if err := id.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := s.secret().Annotations[ClusterAnnotation]; got != s.cluster {
		t.Errorf("Secret is for %q, want %q", got, s.cluster)
	}
}

func TestForeignSecretKept(t *testing.T) {
	s := newSetup(t)
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultSecretName, Namespace: s.ns},
		StringData: map[string]string{"password": "hunter2"},
	}
	if _, err := s.cs.CoreV1().Secrets(s.ns).Create(t.Context(), foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := s.identity(s.relay.tokenFile(t, s.cluster), nil).Ensure(t.Context())
	if err == nil || !strings.Contains(err.Error(), "not managed by clusterconnect") {
		t.Fatalf("err %v, want a refusal to overwrite", err)
	}
	if string(s.secret().Data["password"]) != "hunter2" {
		t.Error("foreign Secret changed")
	}
}

func TestUnusableSecretReenrols(t *testing.T) {
	s := newSetup(t)
	s.enrolled()
	sec := s.secret()
	sec.Data["tls.key"] = []byte("garbage")
	if _, err := s.cs.CoreV1().Secrets(s.ns).Update(t.Context(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := s.identity("", nil).Ensure(t.Context())
	if !errors.Is(err, ErrNoRegistrationToken) || !strings.Contains(err.Error(), "is not usable") {
		t.Fatalf("err %v", err)
	}
	id := s.identity(s.relay.tokenFile(t, s.cluster), nil)
	if err := id.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(s.secret().Data["tls.crt"], s.secret().Data["tls.key"]); err != nil {
		t.Error(err)
	}
}

// TestRunFailuresAndExpiry: renewals fail until the certificate expires;
// each distinct error is logged once, the expiry once with what to do, and a
// token put in place re-registers the running agent.
func TestRunFailuresAndExpiry(t *testing.T) {
	s := newSetup(t)
	s.relay.lifetime.Store(int64(3 * time.Second))
	file := s.relay.tokenFile(t, s.cluster)
	var logs logBuffer
	id := s.identity(file, func(c *Config) { c.Logger = testLogger(t, &logs) })
	if err := id.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	old := id.Certificate()
	s.relay.setRenewFailure(&RelayError{StatusCode: 503, Reason: "ServiceUnavailable", Message: "cluster CA unavailable"})
	// The operator re-registers: the next token is waiting in the file.
	s.relay.lifetime.Store(int64(time.Hour))
	writeFile(t, file, s.relay.token(s.cluster, time.Hour))

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { id.Run(ctx) })
	select {
	case <-id.Rotated():
	case <-time.After(30 * time.Second):
		t.Fatal("no re-registration")
	}
	// The loop logs the recovery after the swap that fired Rotated.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "recovered") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()

	if id.Certificate().Leaf.Equal(old.Leaf) || s.relay.enrolls.Load() != 2 {
		t.Errorf("not re-registered (%d enrolments)", s.relay.enrolls.Load())
	}
	if n := s.relay.renews.Load(); n < 1 {
		t.Error("no renewal attempted")
	}
	out := logs.String()
	if n := strings.Count(out, "cluster CA unavailable"); n != 1 {
		t.Errorf("renewal error logged %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "re-register the cluster"); n != 1 {
		t.Errorf("expiry logged %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "recovered") {
		t.Errorf("recovery not logged:\n%s", out)
	}
}

func TestNewValidates(t *testing.T) {
	cs := fake.NewClientset()
	badCA := filepath.Join(t.TempDir(), "ca.crt")
	writeFile(t, badCA, "not PEM")
	ok := Config{RelayURL: "https://relay:8443", Cluster: "c", Client: cs, Namespace: "ns"}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"http URL", func(c *Config) { c.RelayURL = "http://relay" }, "must be https"},
		{"no cluster", func(c *Config) { c.Cluster = "" }, "cluster name is required"},
		{"no client", func(c *Config) { c.Client = nil }, "client is required"},
		{"no namespace", func(c *Config) { c.Namespace = "" }, "namespace"},
		{"renew at 1", func(c *Config) { c.RenewAt = 1 }, "RenewAt"},
		{"missing CA", func(c *Config) { c.RelayCAFile = filepath.Join(t.TempDir(), "nope") }, "relay CA bundle"},
		{"bad CA", func(c *Config) { c.RelayCAFile = badCA }, "no PEM block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
	id, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if id.secretName != DefaultSecretName || id.renewAt != DefaultRenewAt {
		t.Errorf("defaults: secret %q, renewAt %v", id.secretName, id.renewAt)
	}
}

func TestRenewTime(t *testing.T) {
	id := &Identity{renewAt: DefaultRenewAt}
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := &state{cert: &tls.Certificate{Leaf: &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(90 * 24 * time.Hour)}}}
	if got, want := id.renewTime(st), nb.Add(60*24*time.Hour); !got.Equal(want) {
		t.Errorf("renewTime %s, want %s", got, want)
	}
}

// TestNewTokenReregisters: a token other than the one the Secret was
// enrolled with is an operator re-registering (say, after the cluster was
// deleted and created again, which revoked the stored certificate).
func TestNewTokenReregisters(t *testing.T) {
	s := newSetup(t)
	file := s.relay.tokenFile(t, s.cluster)
	id := s.identity(file, nil)
	if err := id.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	first := id.Certificate()

	// The relay refuses the new token: the stored certificate stays.
	writeFile(t, file, "not-a-token")
	id = s.identity(file, nil)
	if err := id.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !id.Certificate().Leaf.Equal(first.Leaf) {
		t.Error("a refused re-registration replaced the certificate")
	}

	tok := s.relay.token(s.cluster, time.Hour)
	writeFile(t, file, tok+"\n")
	id = s.identity(file, nil)
	if err := id.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	if id.Certificate().Leaf.Equal(first.Leaf) {
		t.Fatal("not re-registered")
	}
	if got := s.secret().Annotations[TokenHashAnnotation]; got != tokenHash(tok) {
		t.Errorf("token hash %q, want %q", got, tokenHash(tok))
	}
	// Restarting with that token does not enrol again.
	if err := s.identity(file, nil).Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := s.relay.enrolls.Load(); n != 3 {
		t.Errorf("%d enrolments, want 3 (first, refused, re-registration)", n)
	}
}
