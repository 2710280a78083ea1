package charts

import "helm.sh/helm/v4/pkg/chart/common"

// In a test binary Helm's client-only capabilities claim Kubernetes v1.20.0
// (common.DefaultCapabilities, fixed under testing.Testing()), which the
// charts' kubeVersion (>=1.29.0-0) refuses; outside tests they follow
// client-go. Lint reads that variable too, so the tests claim the oldest
// version the charts support, set before any test runs.
func init() {
	kv, err := common.ParseKubeVersion("v1.29.0")
	if err != nil {
		panic(err)
	}
	common.DefaultCapabilities.KubeVersion = *kv
}
