package guard

import (
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/pkg/logging"
)

func TestDefaults(t *testing.T) {
	want := &Options{
		Listen:       ":8443",
		HealthListen: ":8081",
		Token: entra.Options{
			IssuerURL:      "https://login.microsoftonline.com",
			V1IssuerURL:    "https://sts.windows.net",
			Algorithms:     []string{"RS256"},
			ClockSkew:      time.Minute,
			JWKSMinRefresh: 5 * time.Second,
			UsernameClaims: []string{"upn", "preferred_username", "oid"},
		},
		RelayTimeout:     3 * time.Second,
		RelayFailureMode: "deny",
		RelayBackoff:     2 * time.Second,
		AllowedTTL:       time.Minute,
		DeniedTTL:        10 * time.Second,
		CacheSize:        10000,
		AllowedPaths:     []string{"/api", "/api/*", "/apis", "/apis/*", "/version", "/healthz", "/livez", "/readyz", "/openapi/*"},
		ShutdownTimeout:  15 * time.Second,
		Log:              logging.Options{Level: "info", Format: "text"},
	}
	if got := NewOptions(); !reflect.DeepEqual(got, want) {
		t.Errorf("defaults changed:\n got %+v\nwant %+v", got, want)
	}
}

func parse(t *testing.T, args ...string) *Options {
	t.Helper()
	o := NewOptions()
	fs := flag.NewFlagSet("guard", flag.ContinueOnError)
	o.Flags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o
}

var required = []string{"--tls-cert-file=s.crt", "--tls-key-file=s.key", "--webhook-client-ca-file=apiserver-client-ca.crt", "--tenant=t", "--audience=a",
	"--relay-url=https://relay.example:8443", "--client-cert-file=tls.crt", "--client-key-file=tls.key"}

func TestValidate(t *testing.T) {
	if err := parse(t, required...).Validate(); err != nil {
		t.Fatalf("minimal flags: %v", err)
	}
	if err := parse(t, "--tls-cert-file=s.crt", "--tls-key-file=s.key", "--webhook-client-ca-file=ca.crt", "--disable-authn",
		"--relay-url=https://r", "--client-cert-file=c", "--client-key-file=k").Validate(); err != nil {
		t.Errorf("authz only: %v", err)
	}
	// The apiserver's client certificate is required unless opted out of.
	var noCA []string
	for _, a := range required {
		if !strings.HasPrefix(a, "--webhook-client-ca-file=") {
			noCA = append(noCA, a)
		}
	}
	if err := parse(t, noCA...).Validate(); err == nil || !strings.Contains(err.Error(), "--webhook-client-ca-file is required") ||
		!strings.Contains(err.Error(), "apiserver-client-ca.crt") {
		t.Errorf("without --webhook-client-ca-file: %v", err)
	}
	if err := parse(t, append(noCA, "--allow-anonymous-webhook-clients")...).Validate(); err != nil {
		t.Errorf("--allow-anonymous-webhook-clients: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--tls-cert-file"},
		{nil, "--tenant is required"},
		{nil, "--relay-url"},
		{nil, "--client-cert-file"},
		{[]string{"--relay-url=http://relay"}, "--relay-url"},
		{[]string{"--relay-failure-mode=allow"}, "--relay-failure-mode"},
		{[]string{"--relay-timeout=45s"}, "--relay-timeout"},
		{[]string{"--allowed-ttl=0"}, "--allowed-ttl"},
		{[]string{"--cache-size=0"}, "--cache-size"},
		{[]string{"--allow-nonresource-path=/a*b"}, "--allow-nonresource-path"},
		{[]string{"--listen=8443"}, "--listen"},
		{[]string{"--issuer-url=http://x"}, "--issuer-url"},
		{[]string{"--log-level=loud"}, "--log-level"},
		{[]string{"--allow-anonymous-webhook-clients"}, "exclude each other"},
	} {
		args := tc.args
		if tc.args != nil {
			args = append(append([]string(nil), required...), tc.args...)
		}
		err := parse(t, args...).Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error mentioning %s", tc.args, err, tc.want)
		}
	}
}

func TestListFlags(t *testing.T) {
	o := parse(t, "--skip-authz-user=a,b", "--skip-authz-user=c", "--skip-authz-group=g", "--allow-nonresource-path=", "--tenant=t1,t2")
	if !reflect.DeepEqual(o.SkipUsers, []string{"a", "b", "c"}) || !reflect.DeepEqual(o.SkipGroups, []string{"g"}) ||
		len(o.AllowedPaths) != 0 || !reflect.DeepEqual(o.Token.Tenants, []string{"t1", "t2"}) {
		t.Errorf("%+v", o)
	}
	o = parse(t, "--allow-nonresource-path=/version")
	if !reflect.DeepEqual(o.AllowedPaths, []string{"/version"}) {
		t.Errorf("the first use replaces the default: %q", o.AllowedPaths)
	}
	if !reflect.DeepEqual(NewOptions().AllowedPaths, DefaultAllowedPaths) {
		t.Error("parsing changed the defaults")
	}
}
