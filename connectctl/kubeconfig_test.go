package connectctl

import (
	"bytes"
	"github.com/clusterconnect/clusterconnect/relay/mgmtapi"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// fakeRelay answers the kubeconfig call as the relay does (mgmtapi.Kubeconfig).
func fakeRelay(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer admin" {
			w.WriteHeader(401)
			w.Write([]byte(`{"kind":"Status","message":"needs the admin token"}`))
			return
		}
		if r.URL.Path != "/api/v1/clusters/prod/kubeconfig" {
			w.WriteHeader(404)
			w.Write([]byte(`{"kind":"Status","message":"cluster \"x\" is not registered"}`))
			return
		}
		b, _ := clientcmd.Write(*mgmtapi.Kubeconfig("https://relay:8443", []byte("CA"), "prod"))
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func runCmd(t *testing.T, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := NewCommand(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestKubeconfigMergeKeepsOtherContexts(t *testing.T) {
	srv := fakeRelay(t)
	dir := t.TempDir()
	kc := filepath.Join(dir, "config")
	existing := clientcmdapi.NewConfig()
	existing.Clusters["work"] = &clientcmdapi.Cluster{Server: "https://work:6443"}
	existing.AuthInfos["work"] = &clientcmdapi.AuthInfo{Token: "work-token"}
	existing.Contexts["work"] = &clientcmdapi.Context{Cluster: "work", AuthInfo: "work"}
	existing.CurrentContext = "work"
	if err := clientcmd.WriteToFile(*existing, kc); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", kc)
	t.Setenv("CONNECTCTL_CONFIG", filepath.Join(dir, "cc.yaml"))
	out, err := runCmd(t, "--relay", srv.URL, "--relay-token", "admin", "kubeconfig", "prod", "--token", "sa-token")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `Merged context "prod"`) {
		t.Errorf("output: %s", out)
	}
	got, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	if got.CurrentContext != "prod" || got.AuthInfos["prod"].Token != "sa-token" || got.Clusters["prod"].Server != "https://relay:8443/clusters/prod" {
		t.Errorf("merged entry wrong: current=%s user=%+v cluster=%+v", got.CurrentContext, got.AuthInfos["prod"], got.Clusters["prod"])
	}
	if got.Contexts["work"] == nil || got.AuthInfos["work"].Token != "work-token" || got.Clusters["work"].Server != "https://work:6443" {
		t.Error("the user's other context was not kept")
	}
}

func TestKubeconfigFileAndErrors(t *testing.T) {
	srv := fakeRelay(t)
	dir := t.TempDir()
	t.Setenv("CONNECTCTL_CONFIG", filepath.Join(dir, "cc.yaml"))
	t.Setenv("CONNECTCTL_RELAY", "")
	t.Setenv("CONNECTCTL_RELAY_TOKEN", "")
	tokFile := filepath.Join(dir, "tok")
	os.WriteFile(tokFile, []byte("from-file\n"), 0o600)
	f := filepath.Join(dir, "prod.kubeconfig")
	if _, err := runCmd(t, "--relay", srv.URL, "--relay-token", "admin", "kubeconfig", "prod", "--token-file", tokFile, "-f", f); err != nil {
		t.Fatal(err)
	}
	got, err := clientcmd.LoadFromFile(f)
	if err != nil || got.AuthInfos["prod"].Token != "from-file" {
		t.Fatalf("standalone kubeconfig: %+v %v", got, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"kubeconfig", "prod"}, "no relay configured"},
		{[]string{"--relay", srv.URL, "kubeconfig", "prod"}, "no relay admin token"},
		{[]string{"--relay", srv.URL, "--relay-token", "wrong", "kubeconfig", "prod"}, "needs the admin token"},
		{[]string{"--relay", srv.URL, "--relay-token", "admin", "kubeconfig", "x"}, "not registered"},
		{[]string{"--relay", "https://127.0.0.1:1", "--relay-token", "admin", "clusters", "list"}, "cannot reach the relay"},
	} {
		if _, err := runCmd(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
