package memstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/memstore"
	"github.com/openverify/verify/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) verify.Store { return memstore.New() })
}

var base = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func newVerification(id string, steps int) verify.VerificationRecord {
	return verify.VerificationRecord{
		ID:          id,
		FlowID:      "flow",
		Status:      verify.StatusPending,
		To:          verify.Recipient{Phone: "+4712345678"},
		CodeHash:    []byte("hash"),
		MaxAttempts: 5,
		Sends:       1,
		LastSentAt:  base,
		Steps:       make([]verify.Step, steps),
		AllowedIPs:  []string{"203.0.113.0/24"},
		CreatedAt:   base,
		ExpiresAt:   base.Add(10 * time.Minute),
	}
}

// Racing Takes that name the same counters in opposite orders must not
// deadlock, and must count every take once.
func TestTakeLockOrder(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	keys := make([]string, 20)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				takes := make([]verify.Take, len(keys))
				for i, k := range keys {
					if g%2 == 1 {
						k = keys[len(keys)-1-i]
					}
					takes[i] = verify.Take{Key: k, Delta: 1, Max: verify.NoLimit, ExpiresAt: base.Add(time.Hour)}
				}
				res, err := s.Take(ctx, base, takes)
				assert.NoError(t, err)
				assert.True(t, res.OK)
			}
		}()
	}
	wg.Wait()
	for _, k := range keys {
		c, err := s.GetCounter(ctx, k, base)
		require.NoError(t, err)
		assert.Equal(t, int64(800), c.Value, k)
	}
}

func TestTakeDuplicateKey(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	take := verify.Take{Key: "a", Delta: 1, Max: verify.NoLimit, ExpiresAt: base.Add(time.Hour)}
	_, err := s.Take(ctx, base, []verify.Take{take, {Key: "b", Delta: 1, Max: 9}, take})
	require.Error(t, err)
	for _, k := range []string{"a", "b"} {
		c, err := s.GetCounter(ctx, k, base)
		require.NoError(t, err)
		assert.Zero(t, c, "a refused Take changes nothing")
	}
}

func TestTakeNotBefore(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	take := verify.Take{Key: "fail", Delta: 1, Max: verify.NoLimit, ExpiresAt: base.Add(time.Hour),
		Backoff: verify.Backoff{Base: time.Second, Max: time.Minute}}
	res, err := s.Take(ctx, base, []verify.Take{take})
	require.NoError(t, err)
	require.True(t, res.OK)
	c, err := s.GetCounter(ctx, "fail", base)
	require.NoError(t, err)
	assert.Equal(t, base.Add(2*time.Second), c.NotBefore, "GetCounter returns NotBefore")

	res, err = s.Take(ctx, base.Add(time.Second), []verify.Take{take})
	require.NoError(t, err)
	assert.False(t, res.OK)
	assert.Equal(t, time.Second, res.RetryAfter)
}

func TestPurgeCounters(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	for i := range 5 {
		_, err := s.Take(ctx, base, []verify.Take{{Key: fmt.Sprint(i), Delta: 1, Max: verify.NoLimit, ExpiresAt: base.Add(time.Minute)}})
		require.NoError(t, err)
	}
	_, err := s.Take(ctx, base, []verify.Take{{Key: "late", Delta: 1, Max: verify.NoLimit, ExpiresAt: base.Add(time.Hour)}})
	require.NoError(t, err)

	n, err := s.Purge(ctx, base.Add(2*time.Hour), 100)
	require.NoError(t, err)
	assert.Zero(t, n)
	c, err := s.GetCounter(ctx, "0", base)
	require.NoError(t, err)
	assert.Equal(t, int64(1), c.Value, "Purge leaves counters alone")

	n, err = s.PurgeCounters(ctx, base.Add(2*time.Minute), 3)
	require.NoError(t, err)
	assert.Equal(t, 3, n, "PurgeCounters stops at limit")
	n, err = s.PurgeCounters(ctx, base.Add(2*time.Minute), 100)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	c, err = s.GetCounter(ctx, "late", base)
	require.NoError(t, err)
	assert.Equal(t, int64(1), c.Value, "a counter expiring later is kept")
}

func TestCountSendCooldown(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	require.NoError(t, s.CreateVerification(ctx, newVerification("v", 1), nil))

	got, counted, err := s.CountSend(ctx, "v", 5, 30*time.Second, base.Add(29*time.Second))
	require.NoError(t, err)
	assert.False(t, counted, "within the cooldown")
	assert.Equal(t, 1, got.Sends)
	assert.Equal(t, base, got.LastSentAt, "CreateVerification keeps LastSentAt")

	got, counted, err = s.CountSend(ctx, "v", 5, 30*time.Second, base.Add(30*time.Second))
	require.NoError(t, err)
	assert.True(t, counted)
	assert.Equal(t, 2, got.Sends)
	assert.Equal(t, base.Add(30*time.Second), got.LastSentAt)

	_, counted, err = s.CountSend(ctx, "v", 5, 0, base.Add(31*time.Second))
	require.NoError(t, err)
	assert.True(t, counted, "no cooldown")
}

func TestFinishRefusesOpenStatus(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	v := newVerification("v", 2)
	require.NoError(t, s.CreateVerification(ctx, v, []verify.PendingStep{{Step: 1, DueAt: base}}))
	for _, st := range []verify.Status{verify.StatusPending, verify.StatusSent, verify.StatusDelivered, "bogus", ""} {
		_, ended, err := s.Finish(ctx, "v", st, base)
		assert.Error(t, err, "Finish(%q)", st)
		assert.False(t, ended)
	}
	got, err := s.GetVerification(ctx, "v")
	require.NoError(t, err)
	assert.Equal(t, verify.StatusPending, got.Status)
	assert.True(t, got.EndedAt.IsZero())
	_, ok, err := s.NextDue(ctx)
	require.NoError(t, err)
	assert.True(t, ok, "the pending step is kept")
}

// ClaimDue with a lease that has already run out must still hand out each
// step once per call.
func TestClaimDueOncePerCall(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	require.NoError(t, s.CreateVerification(ctx, newVerification("v", 3), []verify.PendingStep{
		{Step: 1, DueAt: base}, {Step: 2, DueAt: base.Add(time.Second)},
	}))
	now := base.Add(time.Minute)
	got, err := s.ClaimDue(ctx, now, now, 10)
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, 1, got[0].Step, "earliest first")
	assert.Equal(t, 2, got[1].Step)

	got, err = s.ClaimDue(ctx, now, now, 10)
	require.NoError(t, err)
	assert.Len(t, got, 2, "an expired lease can be claimed again")
}

func TestHandedSlicesCopied(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	flow := func() verify.Flow {
		return verify.Flow{
			ID:                "f",
			Steps:             []verify.Step{{Channel: "sms"}},
			AllowedIPs:        []string{"203.0.113.0/24"},
			AllowedCountries:  []string{"NO"},
			DeniedCountries:   []string{"SE"},
			DeniedNumberTypes: []verify.NumberType{verify.NumberPremiumRate},
		}
	}
	f, want := flow(), flow()
	scribble := func() {
		f.Steps[0].Channel = "x"
		f.AllowedIPs[0] = "x"
		f.AllowedCountries[0] = "x"
		f.DeniedCountries[0] = "x"
		f.DeniedNumberTypes[0] = verify.NumberSharedCost
	}
	require.NoError(t, s.CreateFlow(ctx, f))
	scribble()
	got, err := s.GetFlow(ctx, "f")
	require.NoError(t, err)
	assert.Equal(t, want, got, "CreateFlow copies")

	f = want
	f.Steps, f.AllowedIPs = append([]verify.Step(nil), f.Steps...), append([]string(nil), f.AllowedIPs...)
	f.AllowedCountries, f.DeniedCountries = append([]string(nil), f.AllowedCountries...), append([]string(nil), f.DeniedCountries...)
	f.DeniedNumberTypes = append([]verify.NumberType(nil), f.DeniedNumberTypes...)
	require.NoError(t, s.UpdateFlow(ctx, f))
	scribble()
	got, err = s.GetFlow(ctx, "f")
	require.NoError(t, err)
	assert.Equal(t, want, got, "UpdateFlow copies")

	v := newVerification("v", 1)
	require.NoError(t, s.CreateVerification(ctx, v, nil))
	v.AllowedIPs[0] = "x"
	rec, err := s.GetVerification(ctx, "v")
	require.NoError(t, err)
	assert.Equal(t, []string{"203.0.113.0/24"}, rec.AllowedIPs, "CreateVerification copies AllowedIPs")
}

// TestDuplicateIDsInAnyOrder: an ID already stored is refused whatever
// the order IDs come in: the shard's newest ID only lets greater ones
// skip the lookup. Some of the verifications have ended by the time
// their ID comes again.
func TestDuplicateIDsInAnyOrder(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	ids := make([]string, 300)
	for i := range ids {
		ids[i] = fmt.Sprintf("id-%03d", (i*7919)%len(ids)) // every number once, out of order
	}
	for i, id := range ids {
		require.NoError(t, s.CreateVerification(ctx, newVerification(id, 0), nil))
		if i%3 == 0 {
			_, _, err := s.Finish(ctx, id, verify.StatusCanceled, base)
			require.NoError(t, err)
		}
	}
	for _, id := range ids {
		err := s.CreateVerification(ctx, newVerification(id, 0), nil)
		require.ErrorContains(t, err, "already exists", id)
	}
}
