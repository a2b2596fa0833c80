package storetest

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func testIdempotencyKey(t *testing.T, s verify.Store) {
	_, err := s.FindByIdempotencyKey(ctx(), "none")
	requireNotFound(t, err, "FindByIdempotencyKey of an unknown key")

	a := sampleVerification(5, time.Minute)
	a.IdempotencyKey, a.RequestHash = "key-1", []byte("payload-hash-1")
	create(t, s, a, steps(a))
	got, err := s.FindByIdempotencyKey(ctx(), "key-1")
	require.NoError(t, err)
	assert.Equal(t, a.ID, got.ID)
	assert.Equal(t, []byte("payload-hash-1"), got.RequestHash)
	assert.Equal(t, "key-1", got.IdempotencyKey)

	b := sampleVerification(5, time.Minute)
	b.IdempotencyKey = "key-1"
	err = s.CreateVerification(ctx(), b, steps(b))
	require.Error(t, err)
	assert.True(t, errors.Is(err, verify.ErrDuplicate), "want ErrDuplicate, got %v", err)
	_, err = s.GetVerification(ctx(), b.ID)
	requireNotFound(t, err, "a verification refused for its key is not stored")
	claimed := claimAll(t, s, at(time.Hour))
	assert.NotContains(t, claimed, b.ID+"/0", "nor are its steps")

	// Empty keys never collide.
	for range 3 {
		create(t, s, sampleVerification(5, time.Minute), nil)
	}

	// Racing creates with one key: exactly one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := sampleVerification(5, time.Minute)
			v.IdempotencyKey = "race"
			if err := s.CreateVerification(ctx(), v, nil); err == nil {
				wins.Add(1)
			} else if !errors.Is(err, verify.ErrDuplicate) {
				t.Errorf("racing create: %v", err)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int32(1), wins.Load(), "of 50 racing creates with one key exactly one succeeds")
}

func testFindOpen(t *testing.T, s verify.Store) {
	mk := func(flow string, to verify.Recipient, created time.Duration, ttl time.Duration) verify.VerificationRecord {
		v := sampleVerification(5, ttl)
		v.FlowID, v.To = flow, to
		v.CreatedAt = at(created)
		v.ExpiresAt = v.CreatedAt.Add(ttl)
		return create(t, s, v, nil)
	}
	ana := verify.Recipient{Phone: "+4712345678"}
	bob := verify.Recipient{Phone: "+4787654321"}
	old := mk("f1", ana, 0, 10*time.Minute)
	newer := mk("f1", ana, time.Second, 10*time.Minute)
	mk("f1", bob, 0, 10*time.Minute)
	mk("f2", ana, 0, 10*time.Minute)
	mk("f1", verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"}, 0, 10*time.Minute)
	expired := mk("f1", ana, 0, time.Second)
	ended := mk("f1", ana, 0, 10*time.Minute)
	_, _, err := s.Finish(ctx(), ended.ID, verify.StatusCanceled, at(2*time.Second))
	require.NoError(t, err)

	got, err := s.FindOpen(ctx(), "f1", ana, at(2*time.Second))
	require.NoError(t, err)
	ids := make([]string, len(got))
	for i, v := range got {
		ids[i] = v.ID
	}
	assert.Equal(t, []string{newer.ID, old.ID}, ids, "open, unexpired, same flow and recipient, newest first")
	_ = expired

	none, err := s.FindOpen(ctx(), "f9", ana, at(2*time.Second))
	require.NoError(t, err)
	assert.Empty(t, none)
}

func testCounters(t *testing.T, s verify.Store) {
	c, err := s.GetCounter(ctx(), "missing", base)
	require.NoError(t, err)
	assert.Equal(t, verify.Counter{}, c, "a missing counter is the zero Counter")
	require.NoError(t, s.DeleteCounter(ctx(), "missing"), "deleting a missing counter is not an error")

	c, err = s.AddCounter(ctx(), "k", 2, at(time.Minute), base)
	require.NoError(t, err)
	assert.Equal(t, int64(2), c.Value)
	sameTime(t, base, c.UpdatedAt, "UpdatedAt")
	sameTime(t, at(time.Minute), c.ExpiresAt, "ExpiresAt")
	c, err = s.AddCounter(ctx(), "k", 3, at(2*time.Minute), at(time.Second))
	require.NoError(t, err)
	assert.Equal(t, int64(5), c.Value)
	sameTime(t, at(2*time.Minute), c.ExpiresAt, "ExpiresAt is replaced")
	got, err := s.GetCounter(ctx(), "k", at(time.Second))
	require.NoError(t, err)
	assert.Equal(t, int64(5), got.Value)
	sameTime(t, at(time.Second), got.UpdatedAt, "UpdatedAt")

	got, err = s.GetCounter(ctx(), "k", at(2*time.Minute))
	require.NoError(t, err)
	assert.Equal(t, verify.Counter{}, got, "an expired counter reads as zero")
	c, err = s.AddCounter(ctx(), "k", 1, at(3*time.Minute), at(2*time.Minute))
	require.NoError(t, err)
	assert.Equal(t, int64(1), c.Value, "an expired counter starts again from zero")

	require.NoError(t, s.DeleteCounter(ctx(), "k"))
	got, err = s.GetCounter(ctx(), "k", at(2*time.Minute))
	require.NoError(t, err)
	assert.Equal(t, int64(0), got.Value)

	// Racing adds are all counted.
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.AddCounter(ctx(), "race", 1, at(time.Hour), base)
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	got, err = s.GetCounter(ctx(), "race", base)
	require.NoError(t, err)
	assert.Equal(t, int64(100), got.Value, "every racing AddCounter is counted once")

	// Purge deletes counters that expired before its cut-off.
	_, err = s.AddCounter(ctx(), "short", 1, at(time.Minute), base)
	require.NoError(t, err)
	_, err = s.Purge(ctx(), at(2*time.Minute), 100)
	require.NoError(t, err)
	// Read as of before its expiry: a purged counter is gone, a kept one is not.
	got, err = s.GetCounter(ctx(), "short", base)
	require.NoError(t, err)
	assert.Equal(t, int64(0), got.Value, "Purge deletes expired counters")
	got, err = s.GetCounter(ctx(), "race", base)
	require.NoError(t, err)
	assert.Equal(t, int64(100), got.Value, "Purge keeps live counters")
}
