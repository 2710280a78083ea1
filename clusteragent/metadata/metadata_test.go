package metadata

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestGuess(t *testing.T) {
	node := func(labels map[string]string, provider string) []corev1.Node {
		return []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.NodeSpec{ProviderID: provider}}}
	}
	for _, tc := range []struct {
		name, version string
		nodes         []corev1.Node
		dist, infra   string
	}{
		{"bare", "v1.37.2", nil, "generic", "generic"},
		{"aks", "v1.30.1", node(map[string]string{"kubernetes.azure.com/cluster": "MC_x"}, "azure:///subscriptions/x"), "aks", "azure"},
		{"eks by version", "v1.29.3-eks-adc7111", node(nil, "aws:///eu-west-1a/i-0abc"), "eks", "aws"},
		{"gke", "v1.29.1-gke.1589000", node(map[string]string{"cloud.google.com/gke-nodepool": "default"}, "gce://p/z/n"), "gke", "gcp"},
		{"k3s", "v1.30.2+k3s1", node(nil, "k3s://node1"), "k3s", "generic"},
		{"kind", "v1.30.0", node(nil, "kind://docker/kind/kind-control-plane"), "kind", "docker"},
		{"openshift on vsphere", "v1.28.6+f1618d5", node(map[string]string{"node.openshift.io/os_id": "rhcos"}, "vsphere://4204"), "openshift", "vsphere"},
	} {
		d, i := Guess(tc.version, tc.nodes)
		if d != tc.dist || i != tc.infra {
			t.Errorf("%s: Guess = %s/%s, want %s/%s", tc.name, d, i, tc.dist, tc.infra)
		}
	}
}
