package verify_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/internal/testutil"
	"github.com/openverify/verify/memstore"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

// harness is an engine on memstore with a mock clock, recording channels
// "sms", "voice" (phone) and "email", and a captured debug log.
type harness struct {
	t     *testing.T
	ctx   context.Context
	store *memstore.Store
	clock *clock.Mock
	eng   *verify.Engine
	sms   *channels.Recorder
	voice *channels.Recorder
	email *channels.Recorder
	logs  *syncBuffer
}

// syncBuffer is a buffer safe for the goroutines that write logs and the
// test that reads them.
type syncBuffer = testutil.Buffer

var start = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

func newHarness(t *testing.T, opts ...verify.Option) *harness {
	t.Helper()
	h := &harness{
		t:     t,
		ctx:   context.Background(),
		store: memstore.New(),
		clock: clock.NewMock(),
		sms:   channels.NewRecorder("sms"),
		voice: channels.NewRecorder("voice"),
		email: channels.NewRecorder("email"),
		logs:  &syncBuffer{},
	}
	h.clock.Set(start)
	base := []verify.Option{
		verify.WithClock(h.clock),
		verify.WithChannels(h.sms, h.voice, h.email),
		verify.WithSecret(secret),
		verify.WithLogger(newTextLogger(h.logs)),
		verify.WithProtection(verify.NoProtection()),
	}
	var err error
	h.eng, err = verify.New(h.store, append(base, opts...)...)
	require.NoError(t, err)
	return h
}

// engine returns another engine on the same store, clock and channels, as a
// second instance or a restarted process would be.
func (h *harness) engine(opts ...verify.Option) *verify.Engine {
	h.t.Helper()
	return h.engineOn(h.store, opts...)
}

// engineOn returns an engine on another store (a wrapper of h.store) with
// the harness's clock, channels, secret and log.
func (h *harness) engineOn(s verify.Store, opts ...verify.Option) *verify.Engine {
	h.t.Helper()
	base := []verify.Option{
		verify.WithClock(h.clock),
		verify.WithChannels(h.sms, h.voice, h.email),
		verify.WithSecret(secret),
		verify.WithLogger(newTextLogger(h.logs)),
		verify.WithProtection(verify.NoProtection()),
	}
	e, err := verify.New(s, append(base, opts...)...)
	require.NoError(h.t, err)
	return e
}

// flow creates a flow with the given steps (and the default settings).
func (h *harness) flow(steps ...verify.Step) verify.Flow {
	h.t.Helper()
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "test", Steps: steps, Default: true, Duplicates: verify.DuplicateAllow})
	require.NoError(h.t, err)
	return f
}

var ana = verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"}

// send starts a verification on the default flow and returns it with the
// code the first recorded message carried.
func (h *harness) send() (verify.Verification, string) {
	h.t.Helper()
	v, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(h.t, err)
	m, ok := h.lastMessage(v.ID)
	require.True(h.t, ok, "no message recorded for %s", v.ID)
	return v, m.Code
}

// sendOn starts a verification for the phone number to on eng and returns
// it with the code its message carried.
func (h *harness) sendOn(eng *verify.Engine, to string) (verify.Verification, string) {
	h.t.Helper()
	v, err := eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: to}})
	require.NoError(h.t, err)
	m, ok := h.lastMessage(v.ID)
	require.True(h.t, ok, "no message recorded for %s", v.ID)
	return v, m.Code
}

// lastMessage finds the newest message for a verification on any channel.
func (h *harness) lastMessage(id string) (verify.Message, bool) {
	var found verify.Message
	ok := false
	for _, r := range []*channels.Recorder{h.sms, h.voice, h.email} {
		for _, m := range r.Messages() {
			if m.VerificationID == id {
				found, ok = m, true
			}
		}
	}
	return found, ok
}

func (h *harness) check(id, code string) (verify.Verification, error) {
	return h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: id, Code: code})
}

func (h *harness) processDue() int {
	h.t.Helper()
	n, err := h.eng.ProcessDue(h.ctx)
	require.NoError(h.t, err)
	return n
}

// wrong returns a code of the same shape that is not code.
func wrong(code string) string { return testutil.OtherCode(code) }

// sortedKeys helps deterministic assertions.
func countBy[T comparable](xs []T) map[T]int {
	m := make(map[T]int)
	for _, x := range xs {
		m[x]++
	}
	return m
}

func newTextLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// counterSum is the sum of the values of c's counters whose key starts
// with prefix and that have not expired at now.
func counterSum(t *testing.T, c verify.CounterLister, prefix string, now time.Time) int64 {
	t.Helper()
	return testutil.SumCounters(t, c, prefix, now)
}
