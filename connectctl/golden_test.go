package connectctl

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func fixtures() []api.ConnectedCluster {
	mk := func(name, status, version, agent string, nodes, cores int, seen time.Duration) api.ConnectedCluster {
		c := api.ConnectedCluster{
			ID: "/providers/clusterconnect/connectedClusters/" + name, Name: name, Type: "clusterconnect/connectedClusters",
			Location: "westeurope", Tags: map[string]string{"env": "prod", "team": "payments"}, Etag: `"7"`,
			SystemData: api.SystemData{CreatedAt: t0.Add(-72 * time.Hour)},
			Properties: api.ClusterProperties{
				ProvisioningState: "Succeeded", ConnectivityStatus: status, KubernetesVersion: version, AgentVersion: agent,
				TotalNodeCount: nodes, TotalCoreCount: cores, Distribution: "aks", Infrastructure: "azure",
				ManagedIdentityCertificateExpirationTime: t0.Add(60 * 24 * time.Hour), Tunnels: 2, UID: "0b6f1c2e-1111-4222-8333-444455556666",
			},
		}
		if seen > 0 {
			c.Properties.LastConnectivityTime = t0.Add(-seen)
		}
		return c
	}
	prod := mk("prod-eu", "Connected", "v1.37.2", "v0.1.0", 12, 96, 40*time.Second)
	prod.Properties.Events = []api.Event{
		{Time: t0.Add(-72 * time.Hour), From: "None", To: "Connecting", Reason: "cluster registered"},
		{Time: t0.Add(-71 * time.Hour), From: "Connecting", To: "Connected", Reason: "heartbeat received"},
		{Time: t0.Add(-3 * time.Hour), From: "Connected", To: "Offline", Reason: "no heartbeat for 15m0s"},
		{Time: t0.Add(-2 * time.Hour), From: "Offline", To: "Connected", Reason: "heartbeat received"},
	}
	fresh := mk("staging", "Connecting", "", "", 0, 0, 0)
	fresh.Tags = map[string]string{}
	fresh.Properties.ManagedIdentityCertificateExpirationTime = time.Time{}
	fresh.Properties.Tunnels = 0
	old := mk("edge-7", "Offline", "v1.30.4+k3s1", "v0.0.9", 1, 4, 26*time.Hour)
	return []api.ConnectedCluster{old, prod, fresh}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		os.WriteFile(path, got, 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./connectctl -run Golden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n--- got ---\n%s--- want ---\n%s", name, path, got, want)
	}
}

func TestGoldenListAndShow(t *testing.T) {
	items := fixtures()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/clusters":
			json.NewEncoder(w).Encode(api.ClusterList{Value: items})
		case "/api/v1/clusters/prod-eu":
			json.NewEncoder(w).Encode(items[1])
		case "/api/v1/clusters/staging":
			json.NewEncoder(w).Encode(items[2])
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	t.Setenv("CONNECTCTL_CONFIG", filepath.Join(t.TempDir(), "cc.yaml"))
	run := func(args ...string) []byte {
		var out bytes.Buffer
		cmd := newCommand(&out, func() time.Time { return t0 })
		cmd.SetArgs(append([]string{"--relay", srv.URL, "--relay-token", "x"}, args...))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.Bytes()
	}
	golden(t, "list", run("list"))
	golden(t, "show", run("show", "prod-eu"))
	golden(t, "show-new", run("show", "staging"))
	golden(t, "show-json", run("show", "prod-eu", "-o", "json"))
	golden(t, "list-yaml", run("clusters", "list", "-o", "yaml"))
}

// TestGoldenKubeconfig pins the kubeconfigs kubeconfig writes, with the
// paths, the relay's address and its CA replaced by fixed stand-ins.
func TestGoldenKubeconfig(t *testing.T) {
	f := newFrontDoor(t)
	c := newCLI(t)
	c.loginAdmin(f)
	cfg, _ := LoadConfig(c.config)
	cfg.Entra = &EntraConfig{IssuerURL: "https://login.microsoftonline.com/tenant-1/v2.0", ClientID: "connectctl",
		Scopes: []string{"api://clusterconnect-relay/.default"}, IssuerCAFile: "/etc/ssl/issuer-ca.crt"}
	cfg.Save(c.config)
	exe, _ := os.Executable()
	ca := base64.StdEncoding.EncodeToString(f.caPEM())
	stable := func(b []byte) []byte {
		return []byte(strings.NewReplacer(exe, "/usr/local/bin/connectctl", c.config, "/home/user/.config/connectctl/config.yaml",
			f.URL, "https://relay.example:8443", ca, "<relay CA>").Replace(string(b)))
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"kubeconfig-token", []string{"--token", "sa-token"}},
		{"kubeconfig-entra", []string{"--entra"}},
		{"kubeconfig-entra-scope", []string{"--entra", "--scope", "api://kube-aad-proxy/.default"}},
	} {
		file := filepath.Join(dir, tc.name)
		c.ok(append([]string{"kubeconfig", "prod", "-f", file}, tc.args...)...)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		golden(t, tc.name, stable(b))
	}
}

// TestGoldenHelp pins the help of the commands whose help explains how
// credentials reach kubectl.
func TestGoldenHelp(t *testing.T) {
	t.Setenv("CONNECTCTL_CONFIG", "/home/user/.config/connectctl/config.yaml")
	t.Setenv("XDG_CACHE_HOME", "/home/user/.cache")
	for _, cmd := range []string{"kubeconfig", "kube-credential", "login"} {
		var out bytes.Buffer
		root := newCommand(&out, func() time.Time { return t0 })
		root.SetArgs([]string{cmd, "--help"})
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		golden(t, "help-"+cmd, out.Bytes())
	}
}
