package entra

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the verifier's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	verify   *prometheus.HistogramVec
	failures *prometheus.CounterVec
	jwks     *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg with the given namespace (e.g.
// "aadproxy" or "guard"):
//
//	<ns>_token_verify_seconds{result="ok|rejected|not_entra"}
//	<ns>_authn_failures_total{reason}
//	<ns>_jwks_refreshes_total{result="ok|error"}
func NewMetrics(reg prometheus.Registerer, namespace string) *Metrics {
	m := &Metrics{
		verify: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "token_verify_seconds",
			Help:    "Time to classify and verify a bearer token, including JWKS refreshes and groups overage lookups.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "authn_failures_total",
			Help: "Tokens of the configured issuer that were refused, by reason.",
		}, []string{"reason"}),
		jwks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "jwks_refreshes_total",
			Help: "Fetches of an issuer's signing keys (JWKS), by result.",
		}, []string{"result"}),
	}
	for _, r := range Reasons() {
		m.failures.WithLabelValues(string(r))
	}
	reg.MustRegister(m.verify, m.failures, m.jwks)
	return m
}

func (m *Metrics) observe(seconds float64, err error) {
	if m == nil {
		return
	}
	result := "ok"
	switch {
	case err == ErrNotEntra:
		result = "not_entra"
	case err != nil:
		result = "rejected"
		if r := ReasonOf(err); r != "" {
			m.failures.WithLabelValues(string(r)).Inc()
		}
	}
	m.verify.WithLabelValues(result).Observe(seconds)
}

func (m *Metrics) jwksRefresh(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.jwks.WithLabelValues("error").Inc()
		return
	}
	m.jwks.WithLabelValues("ok").Inc()
}
