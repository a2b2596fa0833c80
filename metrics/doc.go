// Package metrics exposes Prometheus metrics computed from the events of a
// verify.Engine.
//
// A Collector is both a verify.Observer, which turns each event into a
// counter or histogram update, and a prometheus.Collector, which a
// registry scrapes:
//
//	m := metrics.New()
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(m)
//	eng, err := verify.New(store, verify.WithObserver(m), ...)
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Only this package imports client_golang; the verify package does not.
//
// # Metrics
//
// Names are shown with the default namespace, "openverify" (see
// WithNamespace).
//
//	openverify_verifications_created_total{flow}
//		Verifications created by Send (created events).
//
//	openverify_deliveries_total{flow,channel,outcome}
//		Messages handed to a channel. outcome is "sent" (sent events: the
//		channel accepted the message), "failed" (delivery_failed events:
//		the channel returned an error) or "delivered" (delivered events:
//		a delivery report confirmed the message arrived).
//
//	openverify_delivery_duration_seconds{channel}
//		Histogram of how long Channel.Send took, successful or not
//		(Event.Latency of sent and delivery_failed events).
//
//	openverify_checks_total{flow,outcome}
//		Checks of a code, by how the engine answered:
//		  "verified"    the right code (verified events);
//		  "wrong_code"  a wrong code, which used an attempt (check_failed
//		                events with ErrorCode E912);
//		  "refused"     a check answered without comparing the code and
//		                without using an attempt: check_failed events with
//		                any other code (E910, E911, E913, E914, E915 for a
//		                verification that has ended, E920 for an IP address
//		                outside the flow's allow-list), and rate_limited
//		                events raised by Check (E918 too many checks or a
//		                wait after wrong codes, E919 recipient locked out).
//		A rate_limited event belongs to a check when it carries a
//		VerificationID; one without comes from Send and is counted by
//		openverify_sends_refused_total instead.
//
//	openverify_verifications_ended_total{flow,status}
//		Verifications that reached a final status: "verified", "expired",
//		"canceled", "max_attempts" or "failed" (the events of those names).
//
//	openverify_time_to_verify_seconds{flow}
//		Histogram of the time from creation to verification (Event.Latency
//		of verified events).
//
//	openverify_sends_refused_total{reason}
//		Sends refused before a verification was created: reason is
//		"blocked" (blocked events: the SMS-pumping guard or a SendHook) or
//		"rate_limited" (rate_limited events without a VerificationID: a
//		send limit was hit). Both series exist from the start, at zero.
//
//	openverify_bookkeeping_failures_total{op}
//		Writes that failed after the caller had been answered
//		(bookkeeping_failed events): op is the operation, such as "reset
//		failures" or "record delivery". The caller's success stood; a
//		rising count means the store or counters backend is failing.
//
// # Labels
//
// Label values come only from fixed words (the outcomes, statuses and
// reasons above), flow IDs and channel names, so the number of series is
// bounded by the number of flows and channels; events never carry the code
// or the recipient, and the free-text Event.Reason is never used. An event
// without a FlowID is counted with flow="unknown" (the engine names the
// flow on every event of a verification, so this is for events built by
// hand or by other producers). A delivery event without a channel,
// or a flow or channel that is not valid UTF-8, is likewise counted as
// "unknown". Events of other types are ignored.
//
// Latencies below zero (clocks of engine instances disagreeing) are
// observed as zero. The Collector reads no clock of its own: every
// duration comes from an event.
//
// # Conversion rate
//
// The share of verifications that end verified is a query rather than a
// metric:
//
//	sum(rate(openverify_verifications_ended_total{status="verified"}[1h]))
//	  / sum(rate(openverify_verifications_created_total[1h]))
//
// and per flow:
//
//	sum by (flow) (rate(openverify_verifications_ended_total{status="verified"}[1h]))
//	  / sum by (flow) (rate(openverify_verifications_created_total[1h]))
package metrics
