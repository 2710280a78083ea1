package wire

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"math/big"
	"strings"
	"testing"
	"time"
)

// selfSigned returns a certificate and its PKCS#8 PEM key.
func selfSigned(tb testing.TB, cn string) (*x509.Certificate, []byte) {
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
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return cert, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func csrPEM(tb testing.TB) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "c1"}}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func TestResponseRoundTrip(t *testing.T) {
	leaf, _ := selfSigned(t, "c1")
	inter, _ := selfSigned(t, "intermediate")
	ca, _ := selfSigned(t, "ca")
	b, _ := json.Marshal(NewResponse([]*x509.Certificate{leaf, inter}, []*x509.Certificate{ca}))
	is, err := ParseResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(is.Chain) != 2 || !is.Leaf().Equal(leaf) || !is.Chain[1].Equal(inter) || len(is.CABundle) != 1 || !is.CABundle[0].Equal(ca) {
		t.Errorf("round trip changed the answer: %+v", is)
	}
}

func TestParseResponseRefuses(t *testing.T) {
	leaf, key := selfSigned(t, "c1")
	cert := string(EncodeCertificates(leaf))
	for _, tc := range []struct {
		name string
		r    api.CertificateResponse
		want string
	}{
		{"no certificate", api.CertificateResponse{}, "certificate is empty"},
		{"not PEM", api.CertificateResponse{Certificate: "hello"}, "no PEM block"},
		{"a key", api.CertificateResponse{Certificate: cert + string(key)}, `"PRIVATE KEY", want CERTIFICATE`},
		{"bad bundle", api.CertificateResponse{Certificate: cert, CABundle: "x"}, "caBundle"},
		{"bad notAfter", api.CertificateResponse{Certificate: cert, NotAfter: "tomorrow"}, "notAfter"},
		{"other notAfter", api.CertificateResponse{Certificate: cert, NotAfter: leaf.NotAfter.Add(time.Hour).Format(time.RFC3339)}, "does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := json.Marshal(tc.r)
			if _, err := ParseResponse(b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestStatusMessage(t *testing.T) {
	msg, reason, ok := StatusMessage([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"registration token already used","reason":"Unauthorized","code":401}`))
	if !ok || msg != "registration token already used" || reason != "Unauthorized" {
		t.Errorf("got %q %q %v", msg, reason, ok)
	}
	// A reason of another type does not hide the message.
	if msg, _, ok := StatusMessage([]byte(`{"message":"m","reason":0}`)); !ok || msg != "m" {
		t.Errorf("got %q %v", msg, ok)
	}
	if _, _, ok := StatusMessage([]byte(`<html>bad gateway</html>`)); ok {
		t.Error("HTML taken for a Status")
	}
}

func FuzzParseResponse(f *testing.F) {
	leaf, key := selfSigned(f, "c1")
	ca, _ := selfSigned(f, "ca")
	for _, r := range []api.CertificateResponse{
		NewResponse([]*x509.Certificate{leaf}, []*x509.Certificate{ca}),
		{Certificate: string(EncodeCertificates(leaf)) + "# intermediate\n" + string(EncodeCertificates(ca))},
		{Certificate: string(EncodeCertificates(leaf)) + string(key)},
		{Certificate: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", CABundle: "x", NotAfter: "2026-01-01T00:00:00Z"},
	} {
		b, _ := json.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte(`{"kind":"Status","message":"registration token already used","code":401}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		is, err := ParseResponse(body)
		if err != nil {
			return
		}
		if len(is.Chain) == 0 || is.Leaf() == nil {
			t.Fatal("accepted without a leaf")
		}
		// What the agent stores parses back to the same.
		again, _ := json.Marshal(NewResponse(is.Chain, is.CABundle))
		is2, err := ParseResponse(again)
		if err != nil {
			t.Fatalf("re-encoded answer refused: %v", err)
		}
		if !bytes.Equal(EncodeCertificates(is2.Chain...), EncodeCertificates(is.Chain...)) ||
			!bytes.Equal(EncodeCertificates(is2.CABundle...), EncodeCertificates(is.CABundle...)) {
			t.Fatal("re-encoded answer differs")
		}
	})
}

func FuzzParseCSR(f *testing.F) {
	good := csrPEM(f)
	f.Add(good)
	f.Add(good + good)
	f.Add(strings.Replace(good, "CERTIFICATE REQUEST", "CERTIFICATE", 2))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		csr, err := ParseCSR(s)
		if err != nil {
			return
		}
		if csr.CheckSignature() != nil {
			t.Fatal("accepted a CSR with a bad signature")
		}
	})
}

func FuzzStatusMessage(f *testing.F) {
	f.Add([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"registration token already used","reason":"Unauthorized","code":401}`))
	f.Add([]byte(`{"0000":"000000","messAge":"0000","reAson":0}`))
	f.Add([]byte("<html>bad gateway</html>"))
	f.Add([]byte(`{"message":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		msg, _, ok := StatusMessage(body)
		var st struct{ Message string }
		want := json.Unmarshal(body, &st) == nil && st.Message != ""
		if ok != want || (ok && msg != st.Message) {
			t.Fatalf("StatusMessage(%q) = %q, %v; want %q verbatim", body, msg, ok, st.Message)
		}
	})
}
