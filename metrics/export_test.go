package metrics

import "github.com/prometheus/client_golang/prometheus"

// The vectors behind some metrics, so that tests can read one series with
// testutil.ToFloat64.

func Checks(m *Collector) *prometheus.CounterVec       { return m.checks }
func Ended(m *Collector) *prometheus.CounterVec        { return m.ended }
func Deliveries(m *Collector) *prometheus.CounterVec   { return m.deliveries }
func SendsRefused(m *Collector) *prometheus.CounterVec { return m.sendsRefused }
