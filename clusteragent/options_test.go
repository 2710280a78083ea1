package clusteragent

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestOptionsDefaults(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
	t.Setenv("POD_NAMESPACE", "agents")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	o := NewOptions()
	if o.Upstream != "https://10.0.0.1:443" || o.UpstreamCAFile != inClusterCAFile {
		t.Errorf("in-cluster upstream = %q %q", o.Upstream, o.UpstreamCAFile)
	}
	if strings.Join(o.Roles, ",") != "connect,sync" || o.HeartbeatInterval != time.Minute || o.Tunnels != 2 || o.Listen != ":8080" ||
		o.StreamWindow != 4<<20 || o.MaxStreams != 1024 ||
		o.KeepAliveInterval != 15*time.Second || o.KeepAliveTimeout != 10*time.Second ||
		o.DrainTimeout != 30*time.Second || o.BackoffMin != 500*time.Millisecond || o.BackoffMax != 8*time.Second ||
		o.Log.Level != "info" || o.Log.Format != "text" ||
		o.Namespace != "agents" || o.IdentitySecret != "clusterconnect-identity" || o.Kubeconfig != "" {
		t.Errorf("defaults changed: %+v", o)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if o := NewOptions(); o.Upstream != "" {
		t.Errorf("outside a cluster the upstream must be set explicitly, got %q", o.Upstream)
	}
}

func TestOptionsValidate(t *testing.T) {
	base := []string{"--relay-url", "https://relay:8443", "--cluster", "c", "--namespace", "ns", "--upstream", "https://127.0.0.1:6443"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--relay-url is required"},
		{append(base, "--roles", "connect,bogus"), `unknown role "bogus"`},
		{append(base, "--tunnels", "0"), "--tunnels"},
		{append(base, "--allow", "kube=tcp://x:1"), `"kube" is set by --upstream`},
		{append(base, "--backoff-min", "2s", "--backoff-max", "1s"), "--backoff-min"},
		{append(base, "--roles", "identity,connect", "--identity-dir", "/id"), "cannot go with the identity role"},
		{append(base, "--roles", "connect", "--identity-dir", "/id", "--registration-token-file", "/t"), "--registration-token-file is for the identity role"},
		{[]string{"--relay-url", "https://relay:8443", "--cluster", "c", "--roles", "connect", "--identity-dir", "/id"}, "--upstream is required"},
		{[]string{"--relay-url", "https://relay:8443", "--cluster", "c", "--roles", "sync", "--identity-dir", "/id"}, "--namespace is required"},
	} {
		t.Setenv("KUBERNETES_SERVICE_HOST", "")
		o := NewOptions()
		fs := flag.NewFlagSet("clusteragent", flag.ContinueOnError)
		o.Flags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: Validate() = %v, want an error containing %s", tc.args, err, tc.want)
		}
	}
	// connect with a mounted identity needs no namespace (no API access).
	o := NewOptions()
	fs := flag.NewFlagSet("clusteragent", flag.ContinueOnError)
	o.Flags(fs)
	fs.Parse([]string{"--relay-url", "https://relay:8443", "--cluster", "c", "--roles", "connect", "--identity-dir", "/id", "--upstream", "https://10.0.0.1:443"})
	if err := o.Validate(); err != nil || o.needsKube() {
		t.Fatalf("connect with --identity-dir: %v (needsKube %v)", err, o.needsKube())
	}
	o = NewOptions()
	fs = flag.NewFlagSet("clusteragent", flag.ContinueOnError)
	o.Flags(fs)
	fs.Parse(append(base, "--allow", "metrics=tcp://127.0.0.1:9090"))
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.Allow["metrics"] != "tcp://127.0.0.1:9090" {
		t.Errorf("--allow not recorded: %v", o.Allow)
	}
}
