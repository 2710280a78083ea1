package frontdoor_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/relay/authn"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/dataplane"
	"github.com/clusterconnect/clusterconnect/relay/frontdoor"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newDoor is a Door on a fresh store whose host suffix is suffix.
func newDoor(t testing.TB, suffix string) *frontdoor.Door {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	certPEM, keyPEM, err := clusterca.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := clusterca.Load(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	an, err := authn.New(authn.Config{Store: st, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	plane, err := dataplane.New(dataplane.Config{Registered: func(context.Context, string) (bool, error) { return false, nil }})
	if err != nil {
		t.Fatal(err)
	}
	d, err := frontdoor.New(frontdoor.Config{Authn: an, Store: st, Plane: plane, HostSuffix: suffix})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// request has TLS server name sni (no TLS when empty) and Host host.
func request(sni, host string) *http.Request {
	r := &http.Request{Method: http.MethodGet, Host: host, Header: http.Header{}}
	if sni != "" {
		r.TLS = &tls.ConnectionState{ServerName: sni}
	}
	return r
}

func TestClusterByHost(t *testing.T) {
	const suffix = "relay.example.com"
	d := newDoor(t, suffix)
	for _, tc := range []struct {
		why       string
		sni, host string
		want      string // "" means refused
	}{
		{"server name", "prod.relay.example.com", "", "prod"},
		{"Host", "", "prod.relay.example.com", "prod"},
		{"server name wins over Host", "prod.relay.example.com", "dev.relay.example.com", "prod"},
		{"Host when the server name names no cluster", "relay.example.com", "dev.relay.example.com", "dev"},
		{"Host when the server name is another host", "other.example.org", "dev.relay.example.com:443", "dev"},
		{"Host port", "", "prod.relay.example.com:8443", "prod"},
		{"uppercase", "PROD.Relay.Example.COM", "", "prod"},
		{"uppercase Host", "", "Prod.RELAY.example.com:443", "prod"},
		{"trailing dot", "prod.relay.example.com.", "", "prod"},
		{"trailing dot and port", "", "prod.relay.example.com.:443", "prod"},
		{"nested subdomain", "a.prod.relay.example.com", "", ""},
		{"nested subdomain in Host", "", "a.prod.relay.example.com", ""},
		{"nested server name does not fall back to a nested Host", "a.b.relay.example.com", "c.d.relay.example.com", ""},
		{"the suffix itself", "relay.example.com", "relay.example.com:443", ""},
		{"empty label", ".relay.example.com", ".relay.example.com", ""},
		{"no dot before the suffix", "prodrelay.example.com", "prodrelay.example.com", ""},
		{"suffix inside another name", "prod.relay.example.com.evil.example", "prod.relay.example.com.evil.example:443", ""},
		{"two trailing dots", "prod.relay.example.com..", "", ""},
		{"IP address", "", "192.0.2.1:443", ""},
		{"IPv6 address", "", "[2001:db8::1]:443", ""},
		{"nothing", "", "", ""},
	} {
		got, ok := d.ClusterByHost(request(tc.sni, tc.host))
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: ClusterByHost(server name %q, Host %q) = %q, %v; want %q", tc.why, tc.sni, tc.host, got, ok, tc.want)
		}
	}
}

// TestClusterByHostSuffix: the suffix is taken in any case and with dots
// around it; without one, hosts name no cluster.
func TestClusterByHostSuffix(t *testing.T) {
	for _, suffix := range []string{"Relay.Example.COM", ".relay.example.com.", "relay.example.com"} {
		if got, ok := newDoor(t, suffix).ClusterByHost(request("prod.relay.example.com", "")); !ok || got != "prod" {
			t.Errorf("suffix %q: ClusterByHost(prod.relay.example.com) = %q, %v; want prod", suffix, got, ok)
		}
	}
	off := newDoor(t, "")
	for _, h := range []string{"prod.relay.example.com", "prod", "prod.", ".prod"} {
		if got, ok := off.ClusterByHost(request(h, h)); ok {
			t.Errorf("no suffix: ClusterByHost(%q) = %q, want none", h, got)
		}
	}
}

// normalized is a host as ClusterByHost must compare it: port removed,
// lowercase, one trailing dot trimmed.
func normalized(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// names reports the cluster h names under suffix, if any.
func names(h, suffix string) (string, bool) {
	name, ok := strings.CutSuffix(normalized(h), "."+suffix)
	return name, ok && name != "" && !strings.Contains(name, ".")
}

func FuzzClusterByHost(f *testing.F) {
	for _, s := range [][2]string{
		{"prod.relay.example.com", ""},
		{"", "prod.relay.example.com:443"},
		{"relay.example.com", "dev.relay.example.com"},
		{"a.b.relay.example.com", "PROD.RELAY.EXAMPLE.COM."},
		{"", "[::1]:80"},
		{"", "prod.relay.example.com.:"},
		{"x:y.relay.example.com", "a/b.relay.example.com"},
		{"", ".relay.example.com"},
	} {
		f.Add(s[0], s[1])
	}
	const suffix = "relay.example.com"
	d := newDoor(f, suffix)
	f.Fuzz(func(t *testing.T, sni, host string) {
		r := request(sni, host)
		name, ok := d.ClusterByHost(r)
		fromSNI, bySNI := names(sni, suffix)
		fromHost, byHost := names(host, suffix)
		switch {
		case ok && (name == "" || strings.Contains(name, ".")):
			t.Fatalf("ClusterByHost(%q, %q) = %q: not a single label", sni, host, name)
		case bySNI && (!ok || name != fromSNI):
			t.Fatalf("server name %q names %q, Host %q: ClusterByHost = %q, %v", sni, fromSNI, host, name, ok)
		case !bySNI && byHost && (!ok || name != fromHost):
			t.Fatalf("server name %q names nothing, Host %q names %q: ClusterByHost = %q, %v", sni, host, fromHost, name, ok)
		case !bySNI && !byHost && ok:
			t.Fatalf("neither server name %q nor Host %q names a cluster: ClusterByHost = %q", sni, host, name)
		}
		if ok {
			h := sni
			if !bySNI {
				h = host
			}
			if got := normalized(h); got != name+"."+suffix {
				t.Fatalf("ClusterByHost(%q, %q) = %q but the host is %q", sni, host, name, got)
			}
		}
	})
}
