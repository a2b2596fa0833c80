package verify_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/phone"
)

// failingTakes is a counters backend whose Takes fail while fail is set.
type failingTakes struct {
	verify.Counters
	verify.CounterLister
	fail atomic.Bool
}

func (f *failingTakes) Take(ctx context.Context, now time.Time, takes []verify.Take) (verify.Taken, error) {
	if f.fail.Load() {
		return verify.Taken{}, errors.New("counters down")
	}
	return f.Counters.Take(ctx, now, takes)
}

func TestRefusals(t *testing.T) {
	p := verify.NoProtection()
	p.RecipientSends = verify.Rate{Limit: 1, Per: time.Hour}
	p.FreeFailures, p.MaxFailures, p.LockFor = 5, 1, time.Hour
	h := newHarness(t)
	counters := &failingTakes{Counters: h.store, CounterLister: h.store}
	eng := h.engine(verify.WithProtection(p), verify.WithCounters(counters), verify.WithLimiter(verify.NewStoreLimiter(counters)))
	h.flow(verify.Step{Channel: "sms"})
	to := verify.Recipient{Phone: "+4791234567"}
	v, err := eng.Send(h.ctx, verify.SendRequest{To: to})
	require.NoError(t, err)
	_, err = eng.Send(h.ctx, verify.SendRequest{To: to})
	assert.ErrorIs(t, err, verify.ErrRateLimited, "one send an hour")
	_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: "000000"})
	require.Error(t, err) // the one failure allowed
	for range 2 {
		_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: "000000"})
		assert.ErrorIs(t, err, verify.ErrLocked)
	}
	hour := start.Truncate(time.Hour)
	got, err := eng.Refusals(h.ctx, hour, hour.Add(time.Hour))
	require.NoError(t, err)
	assert.Empty(t, got, "nothing written before a flush")

	counters.fail.Store(true)
	assert.Error(t, eng.FlushRefusals(h.ctx), "the counters are down")
	counters.fail.Store(false)
	require.NoError(t, eng.FlushRefusals(h.ctx), "the counts were kept for this flush")
	require.NoError(t, eng.FlushRefusals(h.ctx), "and are not written twice")
	want := []verify.RefusalCount{
		{Hour: hour, Reason: "limit: codes sent to this recipient", Count: 1},
		{Hour: hour, Reason: verify.RefusalLocked, Count: 2},
	}
	got, err = eng.Refusals(h.ctx, hour, hour.Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, want, got)

	// Another instance on the same counters adds its own.
	other := h.engine(verify.WithProtection(p), verify.WithCounters(counters), verify.WithLimiter(verify.NewStoreLimiter(counters)))
	_, err = other.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: "000000"})
	assert.ErrorIs(t, err, verify.ErrLocked)
	require.NoError(t, other.FlushRefusals(h.ctx))
	got, err = eng.Refusals(h.ctx, hour, hour.Add(time.Hour))
	require.NoError(t, err)
	want[1].Count = 3
	assert.Equal(t, want, got)
	got, err = eng.Refusals(h.ctx, hour.Add(time.Hour), hour.Add(2*time.Hour))
	require.NoError(t, err)
	assert.Empty(t, got, "another hour")
	_, err = eng.Refusals(h.ctx, hour, hour)
	assert.ErrorIs(t, err, verify.ErrInvalidParameter)
}

// A send the flow's country rules refuse is counted too.
func TestRefusalsCountGeo(t *testing.T) {
	h := newHarness(t, verify.WithPhoneParser(phone.Parser{}))
	_, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "no-norway", Default: true, DeniedCountries: []string{"NO"},
		Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	_, err = h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4791234567"}})
	assert.ErrorIs(t, err, verify.ErrGeoNotAllowed)
	require.NoError(t, h.eng.FlushRefusals(h.ctx))
	hour := start.Truncate(time.Hour)
	got, err := h.eng.Refusals(h.ctx, hour, hour.Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, []verify.RefusalCount{{Hour: hour, Reason: verify.RefusalGeo, Count: 1}}, got)
}
