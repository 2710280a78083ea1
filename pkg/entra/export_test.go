package entra

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Test accessors for the metrics.

// VerifyCount is the number of verifications observed with result.
func (m *Metrics) VerifyCount(result string) float64 {
	var d dto.Metric
	m.verify.WithLabelValues(result).(prometheus.Histogram).Write(&d)
	return float64(d.GetHistogram().GetSampleCount())
}

func (m *Metrics) FailureCount(r Reason) prometheus.Collector {
	return m.failures.WithLabelValues(string(r))
}

func (m *Metrics) JWKSRefreshCount(result string) prometheus.Collector {
	return m.jwks.WithLabelValues(result)
}

// SetClock replaces the verifier's clock (token times and the JWKS refresh
// interval). Call it before the first Verify.
func (v *Verifier) SetClock(now func() time.Time) { v.now = now }
