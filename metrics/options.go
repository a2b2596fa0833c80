package metrics

import "github.com/prometheus/client_golang/prometheus"

// Option configures a Collector.
type Option func(*config)

type config struct {
	namespace      string
	constLabels    prometheus.Labels
	deliveryBounds []float64
	verifyBounds   []float64
}

// Default histogram buckets, in seconds.
var (
	// A channel call is an HTTP request or an SMTP exchange: milliseconds
	// to seconds, bounded by the engine's send timeout (30 s by default).
	defaultDeliveryBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	// A person reads and types a code: seconds to minutes, bounded by
	// the flow's TTL (5 minutes by default, 24 hours at most).
	defaultVerifyBuckets = []float64{5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800, 3600}
)

// WithNamespace sets the prefix of every metric name. Defaults to
// "openverify"; "" leaves the names unprefixed
// ("verifications_created_total").
func WithNamespace(ns string) Option {
	return func(c *config) { c.namespace = ns }
}

// WithConstLabels adds labels with fixed values to every metric, for
// example {"service": "login"} when several engines share a registry.
// Defaults to none. Later calls add to earlier ones. A name that is flow,
// channel, outcome, status, reason or le makes New panic.
func WithConstLabels(l prometheus.Labels) Option {
	return func(c *config) {
		if c.constLabels == nil {
			c.constLabels = prometheus.Labels{}
		}
		for k, v := range l {
			c.constLabels[k] = v
		}
	}
}

// WithDeliveryBuckets sets the upper bounds, in seconds and increasing, of
// the openverify_delivery_duration_seconds buckets; bounds that do not
// increase make New panic, and none keeps the default. Defaults to 0.01,
// 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 and 30.
func WithDeliveryBuckets(bounds ...float64) Option {
	return func(c *config) { c.deliveryBounds = append([]float64(nil), bounds...) }
}

// WithTimeToVerifyBuckets sets the upper bounds, in seconds and increasing,
// of the openverify_time_to_verify_seconds buckets; bounds that do not
// increase make New panic, and none keeps the default. Defaults to 5, 10, 15,
// 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800 and 3600.
func WithTimeToVerifyBuckets(bounds ...float64) Option {
	return func(c *config) { c.verifyBounds = append([]float64(nil), bounds...) }
}
