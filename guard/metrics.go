package guard

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Source says what an authorization decision came from; it labels
// guard_authz_decisions_total.
type Source string

const (
	// SourceRelay: the relay's checkAccess answered.
	SourceRelay Source = "relay"
	// SourceCache: a cached relay answer.
	SourceCache Source = "cache"
	// SourceRelayRefused: the relay refused the check (4xx); cached as deny.
	SourceRelayRefused Source = "relay_refused"
	// SourceRelayError: the relay could not answer (5xx, timeout, transport
	// error, or within the back-off after one); answered per
	// --relay-failure-mode, not cached.
	SourceRelayError Source = "relay_error"
	// SourceNotGuarded: a system: user, a user without an oid extra, or a
	// user or group on the skip lists: no opinion, RBAC decides.
	SourceNotGuarded Source = "not_guarded"
	// SourcePath: a non-resource path allowed by --allow-nonresource-path.
	SourcePath Source = "path"
	// SourceInvalid: the review could not be mapped to a data action.
	SourceInvalid Source = "invalid"
)

// Result of an authorization decision, the other label.
const (
	ResultAllowed   = "allowed"
	ResultDenied    = "denied"
	ResultNoOpinion = "no_opinion"
)

// Metrics are guard's Prometheus metrics; a nil *Metrics records nothing.
//
//	guard_authz_decisions_total{result="allowed|denied|no_opinion", source}
//	guard_relay_request_duration_seconds{result="ok|refused|error"}
//	guard_authz_cache_lookups_total{result="hit|miss"}
//	guard_authn_reviews_total{result="authenticated|unauthenticated|error"}
//
// plus the token verifier's guard_token_verify_seconds, guard_authn_failures_total
// and guard_jwks_refreshes_total (package pkg/entra).
type Metrics struct {
	decisions *prometheus.CounterVec
	relay     *prometheus.HistogramVec
	cache     *prometheus.CounterVec
	authn     *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "guard", Name: "authz_decisions_total",
			Help: "SubjectAccessReviews answered, by result and by what decided them.",
		}, []string{"result", "source"}),
		relay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "guard", Name: "relay_request_duration_seconds",
			Help:    "Latency of checkAccess calls to the relay, by result.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"result"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "guard", Name: "authz_cache_lookups_total",
			Help: "Decision cache lookups, by hit or miss.",
		}, []string{"result"}),
		authn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "guard", Name: "authn_reviews_total",
			Help: "TokenReviews answered, by result.",
		}, []string{"result"}),
	}
	for _, r := range []string{"hit", "miss"} {
		m.cache.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "refused", "error"} {
		m.relay.WithLabelValues(r)
	}
	reg.MustRegister(m.decisions, m.relay, m.cache, m.authn)
	return m
}

func (m *Metrics) decision(result string, src Source) {
	if m != nil {
		m.decisions.WithLabelValues(result, string(src)).Inc()
	}
}

func (m *Metrics) relayCall(result string, seconds float64) {
	if m != nil {
		m.relay.WithLabelValues(result).Observe(seconds)
	}
}

func (m *Metrics) cacheLookup(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.cache.WithLabelValues("hit").Inc()
	} else {
		m.cache.WithLabelValues("miss").Inc()
	}
}

func (m *Metrics) authnReview(result string) {
	if m != nil {
		m.authn.WithLabelValues(result).Inc()
	}
}
