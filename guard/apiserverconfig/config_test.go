package apiserverconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

func TestDefaults(t *testing.T) {
	want := &Options{OutDir: ".", FailurePolicy: "NoOpinion", Timeout: 10 * time.Second, AuthorizedTTL: 30 * time.Second,
		UnauthorizedTTL: 10 * time.Second, MatchConditions: DefaultMatchConditions}
	if got := NewOptions(); !reflect.DeepEqual(got, want) {
		t.Errorf("defaults changed: %+v", got)
	}
}

func testCA(t *testing.T) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "guard CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	ca, caPEM := filepath.Join(dir, "ca.crt"), testCA(t)
	os.WriteFile(ca, []byte(caPEM), 0o600)
	o := NewOptions()
	fs := flag.NewFlagSet("config", flag.ContinueOnError)
	o.Flags(fs)
	if err := fs.Parse([]string{"--url=https://guard.example:8443", "--ca-file=" + ca, "--out-dir=" + filepath.Join(dir, "out"),
		"--dir=/etc/kubernetes/guard", "--failure-policy=Deny", "--timeout=5s", "--authorized-ttl=1s", "--unauthorized-ttl=2s"}); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := *o
	bad.CAFile = filepath.Join(dir, "out")
	if _, err := bad.Write(); err == nil {
		t.Error("a CA file without a certificate accepted")
	}
	f, err := o.Write()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{f.AuthnKubeconfig: "https://guard.example:8443/tokenreviews", f.AuthzKubeconfig: "https://guard.example:8443/subjectaccessreviews"} {
		kc, err := clientcmd.LoadFromFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cl := kc.Clusters[kc.Contexts[kc.CurrentContext].Cluster]
		if cl.Server != want || string(cl.CertificateAuthorityData) != caPEM {
			t.Errorf("%s: server %s", path, cl.Server)
		}
	}
	b, _ := os.ReadFile(f.AuthorizationConfig)
	var ac AuthorizationConfiguration
	if err := yaml.UnmarshalStrict(b, &ac); err != nil {
		t.Fatal(err)
	}
	wh := ac.Authorizers[2].Webhook
	if ac.APIVersion != "apiserver.config.k8s.io/v1" || ac.Kind != "AuthorizationConfiguration" || len(ac.Authorizers) != 3 ||
		ac.Authorizers[0].Type != "Node" || ac.Authorizers[1].Type != "RBAC" || ac.Authorizers[2].Name != "guard" ||
		wh.ConnectionInfo.KubeConfigFile != "/etc/kubernetes/guard/authz-webhook.kubeconfig" || wh.FailurePolicy != "Deny" ||
		wh.Timeout != "5s" || wh.AuthorizedTTL != "1s" || wh.UnauthorizedTTL != "2s" || wh.SubjectAccessReviewVersion != "v1" ||
		wh.MatchConditionSubjectAccessReviewVersion != "v1" || len(wh.MatchConditions) != 2 {
		t.Errorf("%s", b)
	}
	if got := strings.Join(f.APIServerFlags, " "); got != "--authentication-token-webhook-config-file=/etc/kubernetes/guard/authn-webhook.kubeconfig --authentication-token-webhook-version=v1 --authorization-config=/etc/kubernetes/guard/authorization-config.yaml" {
		t.Errorf("flags %s", got)
	}
}

// Without the apiserver's own certificate, Write makes one, embeds it in
// both kubeconfigs and writes the CA guard verifies it by; a second Write
// reuses them, so that guard keeps its CA.
func TestWriteMakesTheAPIServersClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca, []byte(testCA(t)), 0o600)
	o := NewOptions()
	o.URL, o.CAFile, o.OutDir = "https://guard.example:8443", ca, filepath.Join(dir, "out")
	f, err := o.Write()
	if err != nil {
		t.Fatal(err)
	}
	if f.WebhookClientCAFile != filepath.Join(o.OutDir, ClientCAFile) || !f.ClientCertRenewed {
		t.Fatalf("files %+v", f)
	}
	caPEM, err := os.ReadFile(f.WebhookClientCAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	var certs []string
	for _, path := range []string{f.AuthnKubeconfig, f.AuthzKubeconfig} {
		kc, err := clientcmd.LoadFromFile(path)
		if err != nil {
			t.Fatal(err)
		}
		ai := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo]
		pair, err := tls.X509KeyPair(ai.ClientCertificateData, ai.ClientKeyData)
		if err != nil {
			t.Fatalf("%s: no usable client certificate: %v", path, err)
		}
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: the client certificate does not verify with %s: %v", path, ClientCAFile, err)
		}
		certs = append(certs, string(ai.ClientCertificateData))
	}
	if certs[0] != certs[1] {
		t.Error("the kubeconfigs carry different client certificates")
	}
	again, err := o.Write()
	if err != nil {
		t.Fatal(err)
	}
	kc, _ := clientcmd.LoadFromFile(again.AuthzKubeconfig)
	caAgain, _ := os.ReadFile(again.WebhookClientCAFile)
	if again.ClientCertRenewed || string(kc.AuthInfos["kube-apiserver"].ClientCertificateData) != certs[0] || string(caAgain) != string(caPEM) {
		t.Error("a second Write did not reuse the client certificate and CA")
	}
	// Near its end the pair is replaced.
	p, err := ensureClientPair(o.OutDir, time.Now().Add(clientCertLifetime-clientCertRenew+time.Hour))
	if err != nil || !p.renewed || string(p.certPEM) == certs[0] {
		t.Errorf("an expiring pair was not renewed: %v", err)
	}
}

// With the apiserver's own certificate the kubeconfigs name its files and
// Write makes none.
func TestWriteWithTheAPIServersOwnCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca, []byte(testCA(t)), 0o600)
	o := NewOptions()
	o.URL, o.CAFile, o.OutDir = "https://guard.example:8443", ca, filepath.Join(dir, "out")
	o.ClientCertFile, o.ClientKeyFile = "/etc/kubernetes/pki/guard-client.crt", "/etc/kubernetes/pki/guard-client.key"
	f, err := o.Write()
	if err != nil {
		t.Fatal(err)
	}
	kc, _ := clientcmd.LoadFromFile(f.AuthzKubeconfig)
	ai := kc.AuthInfos["kube-apiserver"]
	if f.WebhookClientCAFile != "" || ai.ClientCertificate != o.ClientCertFile || ai.ClientKey != o.ClientKeyFile || len(ai.ClientCertificateData) != 0 {
		t.Errorf("files %+v, auth %+v", f, ai)
	}
	if _, err := os.Stat(filepath.Join(o.OutDir, ClientCAFile)); !os.IsNotExist(err) {
		t.Errorf("a client CA was written: %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, mod := range []func(*Options){
		func(o *Options) { o.URL = "http://guard" },
		func(o *Options) { o.URL = "https://guard/path" },
		func(o *Options) { o.CAFile = "" },
		func(o *Options) { o.Dir = "relative" },
		func(o *Options) { o.FailurePolicy = "Allow" },
		func(o *Options) { o.Timeout = 31 * time.Second },
		func(o *Options) { o.AuthorizedTTL = 0 },
		func(o *Options) { o.ClientCertFile = "/a" },
		func(o *Options) { o.ClientCertFile, o.ClientKeyFile = "a", "b" },
	} {
		o := NewOptions()
		o.URL, o.CAFile = "https://guard:8443", "ca.crt"
		if err := o.Validate(); err != nil {
			t.Fatal(err)
		}
		mod(o)
		if o.Validate() == nil {
			t.Errorf("accepted %+v", o)
		}
	}
}
