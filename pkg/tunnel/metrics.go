package tunnel

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the tunnel's Prometheus collectors. Create one per process with
// NewMetrics and pass it in Config.Metrics on both ends' sessions.
type Metrics struct {
	Tunnels     prometheus.Gauge
	Streams     prometheus.Gauge
	BytesTx     prometheus.Counter
	BytesRx     prometheus.Counter
	DialSeconds prometheus.Histogram
	Reconnects  prometheus.Counter
	Errors      *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered). namespace prefixes every name, e.g. "relay" or "agent".
func NewMetrics(reg prometheus.Registerer, namespace string) *Metrics {
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "tunnel", Name: "bytes_total",
		Help: "Bytes carried by tunnel WebSocket connections, by direction (tx: sent by this process, rx: received).",
	}, []string{"direction"})
	m := &Metrics{
		Tunnels: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "tunnel", Name: "sessions",
			Help: "Tunnel sessions connected now.",
		}),
		Streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "tunnel", Name: "streams_open",
			Help: "Streams open now over all tunnel sessions.",
		}),
		BytesTx: bytes.WithLabelValues("tx"),
		BytesRx: bytes.WithLabelValues("rx"),
		DialSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "tunnel", Name: "stream_dial_seconds",
			Help:    "Time to open a stream: header sent until the agent's reply (relay), or until the upstream dial finished (agent).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "tunnel", Name: "reconnects_total",
			Help: "Tunnel connection attempts after the first, by the agent.",
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "tunnel", Name: "errors_total",
			Help: "Tunnel errors by reason.",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.Tunnels, m.Streams, bytes, m.DialSeconds, m.Reconnects, m.Errors)
	}
	return m
}

func (m *Metrics) error(reason string) {
	if m != nil {
		m.Errors.WithLabelValues(reason).Inc()
	}
}
