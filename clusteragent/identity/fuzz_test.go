package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The wire format's parsers are fuzzed in package wire, whose small test
// binary fuzzes far faster than this one.

// selfSigned returns a PEM certificate and PKCS#8 PEM key.
func selfSigned(tb testing.TB, cn string) (certPEM, keyPEM []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: now, NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// FuzzParseSecret: whatever is in the Secret, loading it fails cleanly or
// yields a certificate with its key that can be stored again.
func FuzzParseSecret(f *testing.F) {
	crt, key := selfSigned(f, "c1")
	ca, _ := selfSigned(f, "ca")
	f.Add(crt, key, ca)
	f.Add(crt, []byte("garbage"), []byte(nil))
	f.Add([]byte(nil), key, ca)
	f.Fuzz(func(t *testing.T, crt, key, ca []byte) {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{ClusterAnnotation: "c1"}},
			Data:       map[string][]byte{keyCert: crt, keyKey: key, keyCA: ca},
		}
		cert, _, err := parseSecret(s, "c1")
		if err != nil {
			return
		}
		if cert.Leaf == nil || cert.PrivateKey == nil {
			t.Fatal("accepted without a leaf or key")
		}
		if _, err := secretData(cert, ca); err != nil {
			t.Fatalf("loaded identity cannot be stored again: %v", err)
		}
	})
}

func TestRelayError(t *testing.T) {
	for _, tc := range []struct {
		code       int
		body, want string
		reason     string
	}{
		{401, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"registration token already used","reason":"Unauthorized","code":401}`, "registration token already used", "Unauthorized"},
		{502, "<html>bad gateway</html>\n", "<html>bad gateway</html>", ""},
		{503, "", "Service Unavailable", ""},
		{599, "", "HTTP status 599", ""},
		{500, strings.Repeat("x", 2000), strings.Repeat("x", 512) + "...", ""},
	} {
		e := relayError(tc.code, []byte(tc.body))
		if e.StatusCode != tc.code || e.Message != tc.want || e.Reason != tc.reason {
			t.Errorf("relayError(%d, %.40q) = %+v, want message %.40q reason %q", tc.code, tc.body, e, tc.want, tc.reason)
		}
	}
	if got := relayError(http.StatusUnauthorized, []byte(`{"message":"m"}`)).Error(); got != "m (HTTP 401)" {
		t.Errorf("Error() = %q", got)
	}
}
