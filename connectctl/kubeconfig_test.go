package connectctl

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// checkTokenUser checks a kubeconfig user is token mode's exec plugin.
func checkTokenUser(t *testing.T, u *clientcmdapi.AuthInfo, config, cluster, token string) {
	t.Helper()
	exe, _ := os.Executable()
	if u == nil || u.Exec == nil {
		t.Fatalf("user is not an exec user: %+v", u)
	}
	e := u.Exec
	wantArgs := []string{"kube-credential", "--config", config, "--cluster", cluster}
	if u.Token != "" || e.Command != exe || !reflect.DeepEqual(e.Args, wantArgs) || e.APIVersion != "client.authentication.k8s.io/v1" ||
		e.InteractiveMode != clientcmdapi.NeverExecInteractiveMode || e.ProvideClusterInfo ||
		!reflect.DeepEqual(e.Env, []clientcmdapi.ExecEnvVar{{Name: "CONNECTCTL_KUBE_TOKEN", Value: token}}) {
		t.Errorf("exec user: token %q, %+v; want command %s, args %v, env token %q", u.Token, e, exe, wantArgs, token)
	}
}

func TestKubeconfigMergeKeepsOtherContexts(t *testing.T) {
	f := newFrontDoor(t)
	c := newCLI(t)
	c.loginAdmin(f)
	kc := filepath.Join(t.TempDir(), "config")
	existing := clientcmdapi.NewConfig()
	existing.Clusters["work"] = &clientcmdapi.Cluster{Server: "https://work:6443"}
	existing.AuthInfos["work"] = &clientcmdapi.AuthInfo{Token: "work-token"}
	existing.Contexts["work"] = &clientcmdapi.Context{Cluster: "work", AuthInfo: "work"}
	existing.CurrentContext = "work"
	if err := clientcmd.WriteToFile(*existing, kc); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", kc)
	out := c.ok("kubeconfig", "prod", "--token", "sa-token")
	if !strings.Contains(out, `Merged context "prod"`) {
		t.Errorf("output: %s", out)
	}
	got, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	if got.CurrentContext != "prod" {
		t.Errorf("current context %s", got.CurrentContext)
	}
	checkTokenUser(t, got.AuthInfos["prod"], c.config, "prod", "sa-token")
	want := f.kubeconfig("prod").Clusters["prod"]
	if cl := got.Clusters["prod"]; cl == nil || cl.Server != want.Server || cl.TLSServerName != "example.com" || string(cl.CertificateAuthorityData) != string(want.CertificateAuthorityData) {
		t.Errorf("cluster entry is not the relay's: %+v", cl)
	}
	if got.Contexts["work"] == nil || got.AuthInfos["work"].Token != "work-token" || got.Clusters["work"].Server != "https://work:6443" {
		t.Error("the user's other context was not kept")
	}
}

func TestKubeconfigFileAndErrors(t *testing.T) {
	f := newFrontDoor(t)
	c := newCLI(t)
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tok")
	os.WriteFile(tokFile, []byte("from-file\n"), 0o600)
	kf := filepath.Join(dir, "prod.kubeconfig")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"kubeconfig", "prod", "--token", "t"}, "no relay configured"},
		{[]string{"--relay", f.URL, "kubeconfig", "prod", "--token", "t"}, "no relay login"},
		{[]string{"--relay", f.URL, "--ca-file", f.CAFile, "--relay-token", "wrong", "kubeconfig", "prod", "--token", "t"}, "not the admin token"},
		{[]string{"--relay", "https://127.0.0.1:1", "--relay-token", "admin-token", "clusters", "list"}, "cannot reach the relay"},
	} {
		c.fails(tc.want, tc.args...)
	}
	c.loginAdmin(f)
	c.ok("kubeconfig", "prod", "--token-file", tokFile, "-f", kf)
	got, err := clientcmd.LoadFromFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	checkTokenUser(t, got.AuthInfos["prod"], c.config, "prod", "from-file")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"kubeconfig", "x", "--token", "t"}, "not registered"},
		{[]string{"kubeconfig", "prod"}, "at least one of the flags"},
		{[]string{"kubeconfig", "prod", "--token", "t", "--entra"}, "none of the others can be"},
		{[]string{"kubeconfig", "prod", "--entra"}, "no Entra settings"},
		{[]string{"kubeconfig", "prod", "--token", ""}, "no Kubernetes token"},
	} {
		c.fails(tc.want, tc.args...)
	}
}

// TestKubeconfigExecEndToEnd: client-go runs the exec user that kubeconfig
// wrote (this test binary standing in for connectctl), and the request
// reaches the relay's data path with a relay client certificate issued to
// the login and the Kubernetes token as the bearer.
func TestKubeconfigExecEndToEnd(t *testing.T) {
	f := newFrontDoor(t)
	c := newCLI(t)
	c.loginAdmin(f)
	kf := filepath.Join(t.TempDir(), "prod.kubeconfig")
	c.ok("kubeconfig", "prod", "--token", "sa-token", "-f", kf)
	t.Setenv("CONNECTCTL_TEST_AS_MAIN", "1")
	rc, err := clientcmd.BuildConfigFromFlags("", kf)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		resp, err := hc.Get(rc.Host + "/api")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var seen map[string]string
		json.Unmarshal(b, &seen)
		if resp.StatusCode != http.StatusOK || seen["cn"] != "admin:admin" || seen["bearer"] != "sa-token" || seen["path"] != "/clusters/prod/api" {
			t.Fatalf("through the exec plugin: %d %s", resp.StatusCode, b)
		}
	}
	if n := f.Issued(); n != 1 {
		t.Errorf("%d client certificates issued, want 1", n)
	}
}
