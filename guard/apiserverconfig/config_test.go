package apiserverconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
