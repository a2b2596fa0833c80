package metrics_test

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/memstore"
	"github.com/openverify/verify/metrics"
)

var secret = []byte("metrics test secret, 32 bytes..")

type harness struct {
	t          *testing.T
	ctx        context.Context
	clock      *clock.Mock
	sms, email *channels.Recorder
	eng        *verify.Engine
	m          *metrics.Collector
}

// newHarness builds an engine on a memstore and a mock clock that reports
// to a Collector with one-bucket histograms, to keep expositions short.
func newHarness(t *testing.T, opts ...verify.Option) *harness {
	t.Helper()
	h := &harness{
		t:     t,
		ctx:   context.Background(),
		clock: clock.NewMock(),
		sms:   channels.NewRecorder("sms"),
		email: channels.NewRecorder("email"),
		m:     metrics.New(metrics.WithDeliveryBuckets(1), metrics.WithTimeToVerifyBuckets(10)),
	}
	opts = append([]verify.Option{
		verify.WithChannels(h.sms, h.email),
		verify.WithSecret(secret),
		verify.WithClock(h.clock),
		verify.WithObserver(h.m),
		verify.WithProtection(verify.NoProtection()),
		verify.WithLogger(slog.New(slog.DiscardHandler)),
	}, opts...)
	eng, err := verify.New(memstore.New(), opts...)
	require.NoError(t, err)
	h.eng = eng
	return h
}

func (h *harness) flow(f verify.Flow) verify.Flow {
	h.t.Helper()
	f, err := h.eng.CreateFlow(h.ctx, f)
	require.NoError(h.t, err)
	return f
}

func (h *harness) send(flow string, to verify.Recipient) (verify.Verification, error) {
	return h.eng.Send(h.ctx, verify.SendRequest{FlowID: flow, To: to})
}

func (h *harness) check(id, code string) error {
	_, err := h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: id, Code: code})
	return err
}

func lastCode(t *testing.T, r *channels.Recorder) string {
	t.Helper()
	m, ok := r.Last()
	require.True(t, ok, "%s sent nothing", r.Name())
	return m.Code
}

// wrong returns a code of the same length that is not code.
func wrong(code string) string {
	if code[0] == '0' {
		return "1" + code[1:]
	}
	return "0" + code[1:]
}

func requireCode(t *testing.T, err error, want *verify.Error) {
	t.Helper()
	var ve *verify.Error
	require.True(t, errors.As(err, &ve), "want %s, got %v", want.Code, err)
	require.Equal(t, want.Code, ve.Code)
}

// scenario is what drive did, for the assertions.
type scenario struct {
	login, signup verify.Flow
	codes         []string
	recipients    []verify.Recipient
}

// drive takes a login flow (SMS, then email after 30 s) and a signup flow
// (email, one attempt) through every way a verification can go.
func drive(h *harness) scenario {
	t := h.t
	t.Helper()
	var s scenario
	s.login = h.flow(verify.Flow{Name: "login", Steps: []verify.Step{
		{Channel: "sms"}, {Channel: "email", After: 30 * time.Second}}})
	s.signup = h.flow(verify.Flow{Name: "signup", MaxAttempts: 1, Steps: []verify.Step{{Channel: "email"}}})
	to := func(n string) verify.Recipient {
		r := verify.Recipient{Phone: "+47900000" + n, Email: "user" + n + "@example.com"}
		s.recipients = append(s.recipients, r)
		return r
	}

	// Sent by SMS, a wrong code, the right one 5 s later, then a late check.
	v1, err := h.send(s.login.ID, to("01"))
	require.NoError(t, err)
	code := lastCode(t, h.sms)
	s.codes = append(s.codes, code)
	requireCode(t, h.check(v1.ID, wrong(code)), verify.ErrInvalidOTP)
	h.clock.Add(5 * time.Second)
	require.NoError(t, h.check(v1.ID, code))
	requireCode(t, h.check(v1.ID, code), verify.ErrAlreadyVerified)

	// SMS fails, email takes over at once; then canceled.
	h.sms.FailNext(1, nil)
	v2, err := h.send(s.login.ID, to("02"))
	require.NoError(t, err)
	s.codes = append(s.codes, lastCode(t, h.email))
	_, err = h.eng.Cancel(h.ctx, v2.ID)
	require.NoError(t, err)

	// SMS, email 30 s later by ProcessDue, then expired by the sweep.
	_, err = h.send(s.login.ID, to("03"))
	require.NoError(t, err)
	s.codes = append(s.codes, lastCode(t, h.sms))
	h.clock.Add(30 * time.Second)
	_, err = h.eng.ProcessDue(h.ctx)
	require.NoError(t, err)
	h.clock.Add(5 * time.Minute)
	_, err = h.eng.ProcessDue(h.ctx)
	require.NoError(t, err)

	// Every channel fails.
	h.sms.FailNext(1, nil)
	h.email.FailNext(1, nil)
	_, err = h.send(s.login.ID, to("04"))
	requireCode(t, err, verify.ErrDeliveryFailed)

	// One attempt, used by a wrong code.
	v5, err := h.send(s.signup.ID, verify.Recipient{Email: "user05@example.com"})
	require.NoError(t, err)
	s.recipients = append(s.recipients, verify.Recipient{Email: "user05@example.com"})
	code = lastCode(t, h.email)
	s.codes = append(s.codes, code)
	requireCode(t, h.check(v5.ID, wrong(code)), verify.ErrInvalidOTP)
	return s
}

const lifecycleExposition = `
# HELP openverify_checks_total Checks of a code, by outcome: verified, wrong_code or refused.
# TYPE openverify_checks_total counter
openverify_checks_total{flow="LOGIN",outcome="refused"} 1
openverify_checks_total{flow="LOGIN",outcome="verified"} 1
openverify_checks_total{flow="LOGIN",outcome="wrong_code"} 1
openverify_checks_total{flow="SIGNUP",outcome="wrong_code"} 1
# HELP openverify_deliveries_total Messages handed to a channel, by outcome: sent, failed or delivered.
# TYPE openverify_deliveries_total counter
openverify_deliveries_total{channel="email",flow="LOGIN",outcome="failed"} 1
openverify_deliveries_total{channel="email",flow="LOGIN",outcome="sent"} 2
openverify_deliveries_total{channel="email",flow="SIGNUP",outcome="sent"} 1
openverify_deliveries_total{channel="sms",flow="LOGIN",outcome="failed"} 2
openverify_deliveries_total{channel="sms",flow="LOGIN",outcome="sent"} 2
# HELP openverify_delivery_duration_seconds How long a channel took to accept or refuse a message.
# TYPE openverify_delivery_duration_seconds histogram
openverify_delivery_duration_seconds_bucket{channel="email",le="1"} 4
openverify_delivery_duration_seconds_bucket{channel="email",le="+Inf"} 4
openverify_delivery_duration_seconds_sum{channel="email"} 0
openverify_delivery_duration_seconds_count{channel="email"} 4
openverify_delivery_duration_seconds_bucket{channel="sms",le="1"} 4
openverify_delivery_duration_seconds_bucket{channel="sms",le="+Inf"} 4
openverify_delivery_duration_seconds_sum{channel="sms"} 0
openverify_delivery_duration_seconds_count{channel="sms"} 4
# HELP openverify_sends_refused_total Sends refused before a verification was created, by reason: blocked or rate_limited.
# TYPE openverify_sends_refused_total counter
openverify_sends_refused_total{reason="blocked"} 0
openverify_sends_refused_total{reason="rate_limited"} 0
# HELP openverify_time_to_verify_seconds Time from the creation of a verification to its verification.
# TYPE openverify_time_to_verify_seconds histogram
openverify_time_to_verify_seconds_bucket{flow="LOGIN",le="10"} 1
openverify_time_to_verify_seconds_bucket{flow="LOGIN",le="+Inf"} 1
openverify_time_to_verify_seconds_sum{flow="LOGIN"} 5
openverify_time_to_verify_seconds_count{flow="LOGIN"} 1
# HELP openverify_verifications_created_total Verifications created.
# TYPE openverify_verifications_created_total counter
openverify_verifications_created_total{flow="LOGIN"} 4
openverify_verifications_created_total{flow="SIGNUP"} 1
# HELP openverify_verifications_ended_total Verifications that ended, by status: verified, expired, canceled, max_attempts or failed.
# TYPE openverify_verifications_ended_total counter
openverify_verifications_ended_total{flow="LOGIN",status="canceled"} 1
openverify_verifications_ended_total{flow="LOGIN",status="expired"} 1
openverify_verifications_ended_total{flow="LOGIN",status="failed"} 1
openverify_verifications_ended_total{flow="LOGIN",status="verified"} 1
openverify_verifications_ended_total{flow="SIGNUP",status="max_attempts"} 1
`

func TestEngineLifecycle(t *testing.T) {
	h := newHarness(t)
	s := drive(h)

	want := strings.NewReplacer("LOGIN", s.login.ID, "SIGNUP", s.signup.ID).Replace(lifecycleExposition)
	require.NoError(t, testutil.CollectAndCompare(h.m, strings.NewReader(want)))

	assert.Equal(t, 1.0, testutil.ToFloat64(metrics.Checks(h.m).WithLabelValues(s.login.ID, "verified")))
	assert.Equal(t, 1.0, testutil.ToFloat64(metrics.Ended(h.m).WithLabelValues(s.login.ID, "expired")),
		"the expiry sweep's events name their flow")
	assert.Equal(t, 2.0, testutil.ToFloat64(metrics.Deliveries(h.m).WithLabelValues(s.login.ID, "sms", "failed")))
}

func TestRefusals(t *testing.T) {
	p := verify.NoProtection()
	p.FlowSends = verify.Rate{Limit: 1, Per: time.Hour}
	p.FreeFailures, p.FailureDelay = 1, time.Minute
	h := newHarness(t, verify.WithProtection(p),
		verify.WithSendHook(func(_ context.Context, a verify.SendAttempt) error {
			if a.ForeignID == "suspect" {
				return errors.New("host says no")
			}
			return nil
		}))
	flow := h.flow(verify.Flow{Name: "login", Steps: []verify.Step{{Channel: "sms"}}})
	ana := verify.Recipient{Phone: "+4790000001"}

	_, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: flow.ID, To: ana, ForeignID: "suspect"})
	requireCode(t, err, verify.ErrBlocked)
	v, err := h.send(flow.ID, ana)
	require.NoError(t, err)
	_, err = h.send(flow.ID, verify.Recipient{Phone: "+4790000002"})
	requireCode(t, err, verify.ErrRateLimited) // the flow's limit of one send

	code := lastCode(t, h.sms)
	requireCode(t, h.check(v.ID, wrong(code)), verify.ErrInvalidOTP)
	requireCode(t, h.check(v.ID, code), verify.ErrRateLimited) // a wait after a wrong code
	h.clock.Add(time.Minute)
	require.NoError(t, h.check(v.ID, code))

	refused := metrics.SendsRefused(h.m)
	assert.Equal(t, 1.0, testutil.ToFloat64(refused.WithLabelValues("blocked")))
	assert.Equal(t, 1.0, testutil.ToFloat64(refused.WithLabelValues("rate_limited")),
		"a check's rate limit is not a refused send")
	checks := metrics.Checks(h.m)
	assert.Equal(t, 1.0, testutil.ToFloat64(checks.WithLabelValues(flow.ID, "wrong_code")))
	assert.Equal(t, 1.0, testutil.ToFloat64(checks.WithLabelValues(flow.ID, "refused")))
	assert.Equal(t, 1.0, testutil.ToFloat64(checks.WithLabelValues(flow.ID, "verified")))
	assert.Equal(t, 3, testutil.CollectAndCount(h.m, "openverify_checks_total"))
}

// TestObserve covers the mapping event by event, including events the
// engine example above does not produce.
func TestObserve(t *testing.T) {
	const flow = "0b6f8f8e-3c1d-4f7a-9d55-2f0e4a1b7c90"
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ev   verify.Event
		want string // the one series that changes, with its metric name
	}{
		{"created", verify.Event{Type: verify.EventCreated, FlowID: flow},
			`openverify_verifications_created_total{flow="F"} 1`},
		{"sent", verify.Event{Type: verify.EventSent, FlowID: flow, Channel: "sms"},
			`openverify_deliveries_total{channel="sms",flow="F",outcome="sent"} 1`},
		{"delivery failed", verify.Event{Type: verify.EventDeliveryFailed, FlowID: flow, Channel: "sms", Reason: "provider said 500"},
			`openverify_deliveries_total{channel="sms",flow="F",outcome="failed"} 1`},
		{"delivered", verify.Event{Type: verify.EventDelivered, FlowID: flow, Channel: "whatsapp"},
			`openverify_deliveries_total{channel="whatsapp",flow="F",outcome="delivered"} 1`},
		{"delivery without channel", verify.Event{Type: verify.EventDelivered, FlowID: flow},
			`openverify_deliveries_total{channel="unknown",flow="F",outcome="delivered"} 1`},
		{"wrong code", verify.Event{Type: verify.EventCheckFailed, FlowID: flow, ErrorCode: "E912"},
			`openverify_checks_total{flow="F",outcome="wrong_code"} 1`},
		{"check after expiry", verify.Event{Type: verify.EventCheckFailed, FlowID: flow, ErrorCode: "E913"},
			`openverify_checks_total{flow="F",outcome="refused"} 1`},
		{"check from a foreign IP", verify.Event{Type: verify.EventCheckFailed, FlowID: flow, ErrorCode: "E920"},
			`openverify_checks_total{flow="F",outcome="refused"} 1`},
		{"check locked out", verify.Event{Type: verify.EventRateLimited, VerificationID: "v", FlowID: flow, ErrorCode: "E919"},
			`openverify_checks_total{flow="F",outcome="refused"} 1`},
		{"check rate limited", verify.Event{Type: verify.EventRateLimited, VerificationID: "v", FlowID: flow, ErrorCode: "E918"},
			`openverify_checks_total{flow="F",outcome="refused"} 1`},
		{"send rate limited", verify.Event{Type: verify.EventRateLimited, FlowID: flow, ErrorCode: "E918", Reason: "codes sent"},
			`openverify_sends_refused_total{reason="rate_limited"} 1`},
		{"blocked", verify.Event{Type: verify.EventBlocked, FlowID: flow, ErrorCode: "E922", Reason: "prefix +4790 blocked"},
			`openverify_sends_refused_total{reason="blocked"} 1`},
		{"expired by the sweep", verify.Event{Type: verify.EventExpired, VerificationID: "v"},
			`openverify_verifications_ended_total{flow="unknown",status="expired"} 1`},
		{"expired by a check", verify.Event{Type: verify.EventExpired, VerificationID: "v", FlowID: flow},
			`openverify_verifications_ended_total{flow="F",status="expired"} 1`},
		{"canceled", verify.Event{Type: verify.EventCanceled, FlowID: flow},
			`openverify_verifications_ended_total{flow="F",status="canceled"} 1`},
		{"max attempts", verify.Event{Type: verify.EventMaxAttempts, FlowID: flow},
			`openverify_verifications_ended_total{flow="F",status="max_attempts"} 1`},
		{"failed", verify.Event{Type: verify.EventFailed, FlowID: flow, ErrorCode: "E915"},
			`openverify_verifications_ended_total{flow="F",status="failed"} 1`},
		{"bookkeeping failed", verify.Event{Type: verify.EventBookkeepingFailed, VerificationID: "v", FlowID: flow, ErrorCode: "E925", Reason: "reset failures"},
			`openverify_bookkeeping_failures_total{op="reset failures"} 1`},
		{"flow not UTF-8", verify.Event{Type: verify.EventCreated, FlowID: "\xff"},
			`openverify_verifications_created_total{flow="unknown"} 1`},
		{"channel not UTF-8", verify.Event{Type: verify.EventSent, FlowID: flow, Channel: "\xfe"},
			`openverify_deliveries_total{channel="unknown",flow="F",outcome="sent"} 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := metrics.New()
			m.Observe(ctx, tc.ev)
			name := tc.want[:strings.IndexByte(tc.want, '{')]
			got := samples(t, m, name)
			assert.Equal(t, strings.ReplaceAll(tc.want, "F", flow), got)
		})
	}

	t.Run("verified", func(t *testing.T) {
		m := metrics.New(metrics.WithTimeToVerifyBuckets(30))
		m.Observe(ctx, verify.Event{Type: verify.EventVerified, FlowID: flow, Latency: 12 * time.Second})
		want := strings.ReplaceAll(`
# HELP openverify_checks_total Checks of a code, by outcome: verified, wrong_code or refused.
# TYPE openverify_checks_total counter
openverify_checks_total{flow="F",outcome="verified"} 1
# HELP openverify_verifications_ended_total Verifications that ended, by status: verified, expired, canceled, max_attempts or failed.
# TYPE openverify_verifications_ended_total counter
openverify_verifications_ended_total{flow="F",status="verified"} 1
# HELP openverify_time_to_verify_seconds Time from the creation of a verification to its verification.
# TYPE openverify_time_to_verify_seconds histogram
openverify_time_to_verify_seconds_bucket{flow="F",le="30"} 1
openverify_time_to_verify_seconds_bucket{flow="F",le="+Inf"} 1
openverify_time_to_verify_seconds_sum{flow="F"} 12
openverify_time_to_verify_seconds_count{flow="F"} 1
`, "F", flow)
		require.NoError(t, testutil.CollectAndCompare(m, strings.NewReader(want),
			"openverify_checks_total", "openverify_verifications_ended_total", "openverify_time_to_verify_seconds"))
	})

	t.Run("latency", func(t *testing.T) {
		m := metrics.New(metrics.WithDeliveryBuckets(0, 0.5))
		m.Observe(ctx, verify.Event{Type: verify.EventSent, Channel: "sms", Latency: 250 * time.Millisecond})
		m.Observe(ctx, verify.Event{Type: verify.EventDeliveryFailed, Channel: "sms", Latency: 2 * time.Second})
		m.Observe(ctx, verify.Event{Type: verify.EventSent, Channel: "sms", Latency: -time.Second}) // clocks disagree
		require.NoError(t, testutil.CollectAndCompare(m, strings.NewReader(`
# HELP openverify_delivery_duration_seconds How long a channel took to accept or refuse a message.
# TYPE openverify_delivery_duration_seconds histogram
openverify_delivery_duration_seconds_bucket{channel="sms",le="0"} 1
openverify_delivery_duration_seconds_bucket{channel="sms",le="0.5"} 2
openverify_delivery_duration_seconds_bucket{channel="sms",le="+Inf"} 3
openverify_delivery_duration_seconds_sum{channel="sms"} 2.25
openverify_delivery_duration_seconds_count{channel="sms"} 3
`), "openverify_delivery_duration_seconds"))
	})

	t.Run("unknown type", func(t *testing.T) {
		m := metrics.New()
		m.Observe(ctx, verify.Event{Type: "teleported", FlowID: flow, Channel: "sms"})
		m.Observe(ctx, verify.Event{})
		assert.Equal(t, 2, testutil.CollectAndCount(m), "only the two sends_refused series")
	})
}

// samples returns the counter samples of the metric name in m that are not
// zero (sends_refused_total's two series exist from the start), one per
// line, in the text format.
func samples(t *testing.T, m prometheus.Collector, name string) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(m))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var lines []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			v := mt.GetCounter().GetValue()
			if v == 0 {
				continue
			}
			var labels []string
			for _, lp := range mt.GetLabel() {
				labels = append(labels, lp.GetName()+`="`+lp.GetValue()+`"`)
			}
			lines = append(lines, name+"{"+strings.Join(labels, ",")+"} "+strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	return strings.Join(lines, "\n")
}

// TestLabelValues checks that after a full scenario every label value is a
// flow ID, a channel name or one of the fixed words, and that neither a
// code nor a recipient nor an event's free-text Reason reaches a label.
func TestLabelValues(t *testing.T) {
	h := newHarness(t)
	s := drive(h)
	allowed := map[string]map[string]bool{
		"flow":    {s.login.ID: true, s.signup.ID: true, "unknown": true},
		"channel": {"sms": true, "email": true},
		"outcome": {"sent": true, "failed": true, "delivered": true, "verified": true, "wrong_code": true, "refused": true},
		"status":  {"verified": true, "expired": true, "canceled": true, "max_attempts": true, "failed": true},
		"reason":  {"blocked": true, "rate_limited": true},
		"le":      {"1": true, "10": true, "+Inf": true},
	}
	var secrets []string
	secrets = append(secrets, s.codes...)
	for _, r := range s.recipients {
		secrets = append(secrets, r.Phone, r.Email)
	}
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(h.m))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	require.Len(t, mfs, 7)
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				assert.True(t, allowed[lp.GetName()][lp.GetValue()], "%s: label %s=%q", mf.GetName(), lp.GetName(), lp.GetValue())
			}
		}
	}
	var text strings.Builder
	for _, mf := range mfs {
		text.WriteString(mf.String())
	}
	for _, secret := range secrets {
		if secret != "" {
			assert.NotContains(t, text.String(), secret)
		}
	}
	assert.NotContains(t, text.String(), "on purpose", "no delivery error text")
}

// TestConcurrentObserve runs Observe from many goroutines while the
// registry is scraped; run it with -race.
func TestConcurrentObserve(t *testing.T) {
	m := metrics.New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	flows := []string{"f1", "f2", "f3"}
	const workers, rounds = 8, 500
	ctx := context.Background()

	stop := make(chan struct{})
	scraped := make(chan error, 1)
	go func() {
		defer close(scraped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := reg.Gather(); err != nil {
				scraped <- err
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				f := flows[(w+i)%len(flows)]
				m.Observe(ctx, verify.Event{Type: verify.EventCreated, FlowID: f})
				m.Observe(ctx, verify.Event{Type: verify.EventSent, FlowID: f, Channel: "sms", Latency: time.Millisecond})
				m.Observe(ctx, verify.Event{Type: verify.EventCheckFailed, FlowID: f, ErrorCode: "E912"})
				m.Observe(ctx, verify.Event{Type: verify.EventVerified, FlowID: f, Latency: time.Duration(i) * time.Second})
				m.Observe(ctx, verify.Event{Type: verify.EventExpired})
				m.Observe(ctx, verify.Event{Type: verify.EventRateLimited, FlowID: f})
			}
		})
	}
	wg.Wait()
	close(stop)
	require.NoError(t, <-scraped)

	total := func(v *prometheus.CounterVec, lvs ...[]string) float64 {
		var sum float64
		for _, l := range lvs {
			sum += testutil.ToFloat64(v.WithLabelValues(l...))
		}
		return sum
	}
	const n = workers * rounds
	assert.Equal(t, float64(n), total(metrics.Checks(m),
		[]string{"f1", "wrong_code"}, []string{"f2", "wrong_code"}, []string{"f3", "wrong_code"}))
	assert.Equal(t, float64(n), total(metrics.Ended(m), []string{"unknown", "expired"}))
	assert.Equal(t, float64(n), total(metrics.Deliveries(m),
		[]string{"f1", "sms", "sent"}, []string{"f2", "sms", "sent"}, []string{"f3", "sms", "sent"}))
	assert.Equal(t, float64(n), testutil.ToFloat64(metrics.SendsRefused(m).WithLabelValues("rate_limited")))
}

func TestRegister(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	a := metrics.New(metrics.WithConstLabels(prometheus.Labels{"engine": "a"}))
	b := metrics.New(metrics.WithConstLabels(prometheus.Labels{"engine": "b"}))
	require.NoError(t, reg.Register(a), "the first engine")
	require.NoError(t, reg.Register(b), "a second engine told apart by a const label")
	var err prometheus.AlreadyRegisteredError
	require.ErrorAs(t, reg.Register(metrics.New(metrics.WithConstLabels(prometheus.Labels{"engine": "a"}))), &err)

	c := metrics.New(metrics.WithNamespace("acme_verify"), metrics.WithConstLabels(prometheus.Labels{"region": "eu"}))
	c.Observe(context.Background(), verify.Event{Type: verify.EventCreated, FlowID: "f"})
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP acme_verify_verifications_created_total Verifications created.
# TYPE acme_verify_verifications_created_total counter
acme_verify_verifications_created_total{flow="f",region="eu"} 1
`), "acme_verify_verifications_created_total"))

	h := newHarness(t)
	drive(h)
	problems, lintErr := testutil.CollectAndLint(h.m)
	require.NoError(t, lintErr)
	assert.Empty(t, problems, "metric names and help pass promlint")
}

// TestNewPanics checks that options that would break registration, or
// Observe on its first event, are refused by New.
func TestNewPanics(t *testing.T) {
	for name, opt := range map[string]metrics.Option{
		"namespace":              metrics.WithNamespace("\xff"),
		"const label named flow": metrics.WithConstLabels(prometheus.Labels{"flow": "x"}),
		"const label named le":   metrics.WithConstLabels(prometheus.Labels{"le": "x"}),
		"const label not UTF-8":  metrics.WithConstLabels(prometheus.Labels{"engine": "\xff"}),
		"delivery buckets":       metrics.WithDeliveryBuckets(1, 0.5),
		"time to verify buckets": metrics.WithTimeToVerifyBuckets(10, 10),
	} {
		t.Run(name, func(t *testing.T) {
			assert.Panics(t, func() { metrics.New(opt) })
		})
	}
	assert.NotPanics(t, func() {
		metrics.New(nil, metrics.WithNamespace(""), metrics.WithDeliveryBuckets(), metrics.WithTimeToVerifyBuckets(60, math.Inf(1)))
	})
}
