package metrics

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/openverify/verify"
)

// Collector turns engine events into Prometheus metrics. Pass it to
// verify.WithObserver and register it with a prometheus.Registerer; the
// package documentation lists the metrics. A Collector is safe for
// concurrent use. Observe only updates counters and histograms in memory:
// it does no I/O, reads no clock and does not panic.
type Collector struct {
	created *prometheus.CounterVec // {flow}

	deliveries                          *prometheus.CounterVec // {flow,channel,outcome}
	delivSent, delivFailed, delivReport *prometheus.CounterVec // curried by outcome
	deliveryTime                        *prometheus.HistogramVec

	checks                            *prometheus.CounterVec // {flow,outcome}
	checkOK, checkWrong, checkRefused *prometheus.CounterVec // curried by outcome

	ended                                *prometheus.CounterVec // {flow,status}
	endVerified, endExpired, endCanceled *prometheus.CounterVec // curried by status
	endMaxAttempts, endFailed            *prometheus.CounterVec
	timeToVerify                         *prometheus.HistogramVec
	sendsRefused                         *prometheus.CounterVec // {reason}
	refusedBlocked, refusedRateLimited   prometheus.Counter
	bookkeeping                          *prometheus.CounterVec // {op}
}

var (
	_ verify.Observer      = (*Collector)(nil)
	_ prometheus.Collector = (*Collector)(nil)
)

// unknown stands for a flow or channel an event does not name.
const unknown = "unknown"

// New returns a Collector. Like client_golang's constructors, it panics on
// invalid options: a namespace or const label that makes an invalid name, a
// const label named flow, channel, outcome, status, reason or le, or bucket
// bounds that do not increase. (Left alone, these would fail at
// registration or, for histograms, on the first event.)
func New(opts ...Option) *Collector {
	c := config{namespace: "openverify"}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if len(c.deliveryBounds) == 0 {
		c.deliveryBounds = defaultDeliveryBuckets
	}
	if len(c.verifyBounds) == 0 {
		c.verifyBounds = defaultVerifyBuckets
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: c.namespace, Name: name, Help: help, ConstLabels: c.constLabels,
		}, labels)
	}
	histogram := func(name, help string, bounds []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: c.namespace, Name: name, Help: help, ConstLabels: c.constLabels, Buckets: bounds,
		}, labels)
	}

	m := &Collector{
		created: counter("verifications_created_total",
			"Verifications created.", "flow"),
		deliveries: counter("deliveries_total",
			"Messages handed to a channel, by outcome: sent, failed or delivered.", "flow", "channel", "outcome"),
		deliveryTime: histogram("delivery_duration_seconds",
			"How long a channel took to accept or refuse a message.", c.deliveryBounds, "channel"),
		checks: counter("checks_total",
			"Checks of a code, by outcome: verified, wrong_code or refused.", "flow", "outcome"),
		ended: counter("verifications_ended_total",
			"Verifications that ended, by status: verified, expired, canceled, max_attempts or failed.", "flow", "status"),
		timeToVerify: histogram("time_to_verify_seconds",
			"Time from the creation of a verification to its verification.", c.verifyBounds, "flow"),
		sendsRefused: counter("sends_refused_total",
			"Sends refused before a verification was created, by reason: blocked or rate_limited.", "reason"),
		bookkeeping: counter("bookkeeping_failures_total",
			"Counters or records that could not be written after a done thing (a verified code, a delivered message), by operation; the caller's answer stood.", "op"),
	}
	outcome := func(v *prometheus.CounterVec, label, value string) *prometheus.CounterVec {
		return v.MustCurryWith(prometheus.Labels{label: value})
	}
	m.delivSent = outcome(m.deliveries, "outcome", "sent")
	m.delivFailed = outcome(m.deliveries, "outcome", "failed")
	m.delivReport = outcome(m.deliveries, "outcome", "delivered")
	m.checkOK = outcome(m.checks, "outcome", "verified")
	m.checkWrong = outcome(m.checks, "outcome", "wrong_code")
	m.checkRefused = outcome(m.checks, "outcome", "refused")
	m.endVerified = outcome(m.ended, "status", "verified")
	m.endExpired = outcome(m.ended, "status", "expired")
	m.endCanceled = outcome(m.ended, "status", "canceled")
	m.endMaxAttempts = outcome(m.ended, "status", "max_attempts")
	m.endFailed = outcome(m.ended, "status", "failed")
	m.refusedBlocked = m.sendsRefused.WithLabelValues("blocked")
	m.refusedRateLimited = m.sendsRefused.WithLabelValues("rate_limited")

	if err := prometheus.NewRegistry().Register(m); err != nil {
		panic(fmt.Sprintf("metrics: %v (check WithNamespace and WithConstLabels)", err))
	}
	checkHistogram("WithDeliveryBuckets", c, c.deliveryBounds)
	checkHistogram("WithTimeToVerifyBuckets", c, c.verifyBounds)
	return m
}

// checkHistogram panics now if a histogram with these buckets and const
// labels would panic when its first series is created.
func checkHistogram(option string, c config, bounds []float64) {
	defer func() {
		if r := recover(); r != nil {
			panic(fmt.Sprintf("metrics: %s: %v", option, r))
		}
	}()
	prometheus.NewHistogram(prometheus.HistogramOpts{Name: "check", ConstLabels: c.constLabels, Buckets: bounds})
}

// wrongCode is the ErrorCode of a check_failed event for a wrong code
// (verify.ErrInvalidOTP).
var wrongCode = verify.ErrInvalidOTP.Code

// Observe implements verify.Observer: it updates the metrics the event
// counts toward, and ignores events of unknown types.
func (m *Collector) Observe(_ context.Context, ev verify.Event) {
	switch ev.Type {
	case verify.EventCreated:
		inc(m.created, ev.FlowID)
	case verify.EventSent:
		inc2(m.delivSent, ev.FlowID, ev.Channel)
		observe(m.deliveryTime, ev.Channel, ev.Latency)
	case verify.EventDeliveryFailed:
		inc2(m.delivFailed, ev.FlowID, ev.Channel)
		observe(m.deliveryTime, ev.Channel, ev.Latency)
	case verify.EventDelivered:
		inc2(m.delivReport, ev.FlowID, ev.Channel)
	case verify.EventCheckFailed:
		if ev.ErrorCode == wrongCode {
			inc(m.checkWrong, ev.FlowID)
		} else {
			inc(m.checkRefused, ev.FlowID)
		}
	case verify.EventVerified:
		inc(m.checkOK, ev.FlowID)
		inc(m.endVerified, ev.FlowID)
		observe(m.timeToVerify, ev.FlowID, ev.Latency)
	case verify.EventExpired:
		inc(m.endExpired, ev.FlowID)
	case verify.EventCanceled:
		inc(m.endCanceled, ev.FlowID)
	case verify.EventMaxAttempts:
		inc(m.endMaxAttempts, ev.FlowID)
	case verify.EventFailed:
		inc(m.endFailed, ev.FlowID)
	case verify.EventBlocked:
		m.refusedBlocked.Inc()
	case verify.EventRateLimited:
		if ev.VerificationID != "" { // raised by Check
			inc(m.checkRefused, ev.FlowID)
		} else { // raised by Send
			m.refusedRateLimited.Inc()
		}
	case verify.EventBookkeepingFailed:
		inc(m.bookkeeping, ev.Reason)
	}
}

// Describe implements prometheus.Collector.
func (m *Collector) Describe(ch chan<- *prometheus.Desc) {
	m.created.Describe(ch)
	m.deliveries.Describe(ch)
	m.deliveryTime.Describe(ch)
	m.checks.Describe(ch)
	m.ended.Describe(ch)
	m.timeToVerify.Describe(ch)
	m.sendsRefused.Describe(ch)
	m.bookkeeping.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Collector) Collect(ch chan<- prometheus.Metric) {
	m.created.Collect(ch)
	m.deliveries.Collect(ch)
	m.deliveryTime.Collect(ch)
	m.checks.Collect(ch)
	m.ended.Collect(ch)
	m.timeToVerify.Collect(ch)
	m.sendsRefused.Collect(ch)
	m.bookkeeping.Collect(ch)
}

// inc adds one to the series of v for the label value a ("unknown" if it
// is empty or not valid UTF-8).
func inc(v *prometheus.CounterVec, a string) {
	if a == "" {
		a = unknown
	}
	c, err := v.GetMetricWithLabelValues(a)
	if err != nil {
		if c, err = v.GetMetricWithLabelValues(unknown); err != nil {
			return
		}
	}
	c.Inc()
}

// inc2 is inc for two label values.
func inc2(v *prometheus.CounterVec, a, b string) {
	if a == "" {
		a = unknown
	}
	if b == "" {
		b = unknown
	}
	c, err := v.GetMetricWithLabelValues(a, b)
	if err != nil {
		if c, err = v.GetMetricWithLabelValues(valid(a), valid(b)); err != nil {
			return
		}
	}
	c.Inc()
}

// observe records d, in seconds and at least zero, in the histogram of v
// for the label value a.
func observe(v *prometheus.HistogramVec, a string, d time.Duration) {
	if a == "" {
		a = unknown
	}
	o, err := v.GetMetricWithLabelValues(a)
	if err != nil {
		if o, err = v.GetMetricWithLabelValues(unknown); err != nil {
			return
		}
	}
	o.Observe(max(d, 0).Seconds())
}

// valid returns s, or "unknown" if s is not valid UTF-8, which
// client_golang refuses as a label value.
func valid(s string) string {
	if !utf8.ValidString(s) {
		return unknown
	}
	return s
}
