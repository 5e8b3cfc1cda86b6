package serve

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metric names, exposed at /metrics.
const (
	MetricIssued   = "tpmid_ca_issued_total"
	MetricRefused  = "tpmid_ca_refused_total"
	MetricDuration = "tpmid_ca_request_duration_seconds"
	MetricPending  = "tpmid_ca_challenges_pending"
	MetricExpired  = "tpmid_ca_challenges_expired_total"
)

type metrics struct {
	reg      *prometheus.Registry
	issued   prometheus.Counter
	refused  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	expired  prometheus.Counter
}

func newMetrics(pending func() float64) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricIssued,
			Help: "AK certificates issued (POST /secret answered with a chain).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRefused,
			Help: "Requests refused, by reason (the error field of the JSON answer).",
		}, []string{"reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricDuration,
			Help:    "Time to answer POST /attest and POST /secret, by endpoint and outcome (ok, refused).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"endpoint", "outcome"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricExpired,
			Help: "Challenges dropped because no secret answered them within the challenge TTL.",
		}),
	}
	m.reg.MustRegister(m.issued, m.refused, m.duration, m.expired,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: MetricPending,
			Help: "Challenges waiting for their secret.",
		}, pending),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Every reason shows from the start, at 0, so that rates and alerts
	// need no special case for a reason not seen yet.
	for _, r := range allReasons {
		m.refused.WithLabelValues(string(r))
	}
	for _, e := range []string{endpointAttest, endpointSecret} {
		for _, o := range []string{"ok", "refused"} {
			m.duration.WithLabelValues(e, o)
		}
	}
	return m
}
