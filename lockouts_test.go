package verify_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func TestLockoutsAndBlocks(t *testing.T) {
	p := verify.NoProtection()
	p.FreeFailures, p.FailureDelay, p.MaxFailureDelay = 1, 10*time.Second, 10*time.Second
	p.MaxFailures, p.LockFor = 3, time.Hour
	h := newHarness(t, verify.WithProtection(p))
	h.flow(verify.Step{Channel: "sms"})
	wrong := func(phone string, n int) {
		v, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: phone}})
		require.NoError(t, err)
		for range n {
			h.clock.Add(20 * time.Second) // past any delay, before the code expires
			_, err := h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: "000000"})
			require.Error(t, err)
		}
	}
	wrong("+4791000001", 3) // locked
	wrong("+4791000003", 1) // one free failure
	wrong("+4791000002", 2) // the second failure owes 10 s, not over yet

	page, err := h.eng.Lockouts(h.ctx, "", 0)
	require.NoError(t, err)
	require.Len(t, page.Lockouts, 3)
	assert.Empty(t, page.Next)
	l := page.Lockouts
	assert.Equal(t, verify.Recipient{Phone: "+4791000001"}, l[0].To)
	assert.True(t, l[0].Locked)
	assert.Equal(t, 3, l[0].Failures)
	assert.False(t, l[0].Until.IsZero())
	assert.Equal(t, 2, l[1].Failures)
	assert.False(t, l[1].Locked)
	assert.True(t, l[1].Until.After(h.clock.Now()), "a delay still running")
	assert.Equal(t, 1, l[2].Failures)
	assert.True(t, l[2].Until.IsZero(), "a free failure holds nothing back")

	// One at a time.
	var seen []string
	cursor := ""
	for {
		page, err := h.eng.Lockouts(h.ctx, cursor, 1)
		require.NoError(t, err)
		for _, l := range page.Lockouts {
			seen = append(seen, l.To.Phone)
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	assert.Equal(t, []string{"+4791000001", "+4791000002", "+4791000003"}, seen)
	_, err = h.eng.Lockouts(h.ctx, "bogus!", 1)
	assert.ErrorIs(t, err, verify.ErrInvalidParameter)
	_, err = h.eng.Lockouts(h.ctx, "", 1001)
	assert.ErrorIs(t, err, verify.ErrInvalidParameter)

	require.NoError(t, h.eng.Unlock(h.ctx, verify.Recipient{Phone: "+4791000001"}))
	page, err = h.eng.Lockouts(h.ctx, "", 0)
	require.NoError(t, err)
	assert.Len(t, page.Lockouts, 2, "Unlock lifts it")

	// Blocks, as the pumping guard writes them.
	_, err = h.store.Take(h.ctx, h.clock.Now(), []verify.Take{{Key: "block:prefix:+4790", Delta: 1, Max: verify.NoLimit, ExpiresAt: h.clock.Now().Add(time.Hour)}})
	require.NoError(t, err)
	blocks, err := h.eng.Blocks(h.ctx, "", 0)
	require.NoError(t, err)
	require.Len(t, blocks.Blocks, 1)
	assert.Equal(t, "+4790", blocks.Blocks[0].Prefix)
	assert.ErrorIs(t, h.eng.Unblock(h.ctx, " "), verify.ErrMissingField)
	require.NoError(t, h.eng.Unblock(h.ctx, "+4790"))
	blocks, err = h.eng.Blocks(h.ctx, "", 0)
	require.NoError(t, err)
	assert.Empty(t, blocks.Blocks)
	require.NoError(t, h.eng.Unblock(h.ctx, "+4790"), "unblocking twice is not an error")
}

// unlistable is a counters backend without CounterLister.
type unlistable struct{ verify.Counters }

func (u unlistable) Take(ctx context.Context, now time.Time, takes []verify.Take) (verify.Taken, error) {
	return u.Counters.Take(ctx, now, takes)
}

func TestLockoutsUnsupported(t *testing.T) {
	h := newHarness(t)
	eng := h.engine(verify.WithCounters(unlistable{h.store}))
	_, err := eng.Lockouts(h.ctx, "", 0)
	assert.ErrorIs(t, err, verify.ErrListingUnsupported)
	_, err = eng.Blocks(h.ctx, "", 0)
	assert.ErrorIs(t, err, verify.ErrListingUnsupported)
}
