package cluster

import (
	"slices"
	"testing"
)

func TestAPIServerArgsOverrides(t *testing.T) {
	c := &Cluster{EtcdURL: "http://127.0.0.1:1", Dir: "/d", pki: &pki{}}
	args := apiserverArgs(c, &Options{
		AuthorizationMode:  "RBAC",
		ExtraAPIServerArgs: []string{"--service-cluster-ip-range=10.1.0.0/24", "--v=4", "-x"},
	}, 6443)
	for _, want := range []string{"--authorization-mode=RBAC", "--service-cluster-ip-range=10.1.0.0/24", "--v=4", "-x", "--secure-port=6443"} {
		if !slices.Contains(args, want) {
			t.Errorf("args lack %q: %q", want, args)
		}
	}
	if slices.Contains(args, "--service-cluster-ip-range=10.0.0.0/24") {
		t.Errorf("default --service-cluster-ip-range not replaced: %q", args)
	}
	if def := apiserverArgs(c, &Options{}, 1); !slices.Contains(def, "--authorization-mode=Node,RBAC") {
		t.Errorf("default authorization mode missing: %q", def)
	}
}
