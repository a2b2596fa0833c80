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

func testIdempotencyKey(t *testing.T, s verificationStore) {
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

func testFindOpen(t *testing.T, s verificationStore) {
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

	all, err := s.FindOpen(ctx(), "f1", ana, time.Time{})
	require.NoError(t, err)
	ids = ids[:0]
	for _, v := range all {
		ids = append(ids, v.ID)
	}
	assert.ElementsMatch(t, []string{newer.ID, old.ID, expired.ID}, ids, "with the zero now, every open one, expired too")

	none, err := s.FindOpen(ctx(), "f9", ana, at(2*time.Second))
	require.NoError(t, err)
	assert.Empty(t, none)
}

func testExclusive(t *testing.T, s verificationStore) {
	ana := verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"}
	mk := func(flow string, to verify.Recipient, exclusive bool) verify.VerificationRecord {
		v := sampleVerification(5, time.Minute)
		v.FlowID, v.To, v.Exclusive = flow, to, exclusive
		return v
	}
	first := create(t, s, mk("f", ana, true), nil)
	got, err := s.GetVerification(ctx(), first.ID)
	require.NoError(t, err)
	assert.True(t, got.Exclusive, "Exclusive is stored")

	second := mk("f", ana, true)
	err = s.CreateVerification(ctx(), second, steps(second))
	require.ErrorIs(t, err, verify.ErrOpenExists, "a second exclusive one while the first is open")
	_, err = s.GetVerification(ctx(), second.ID)
	requireNotFound(t, err, "the refused verification is not stored")
	assert.Empty(t, claimAll(t, s, at(time.Hour)), "nor are its steps")

	// Other flows, other recipients and verifications that are not
	// exclusive do not clash.
	create(t, s, mk("g", ana, true), nil)
	create(t, s, mk("f", verify.Recipient{Phone: ana.Phone}, true), nil)
	create(t, s, mk("f", verify.Recipient{Phone: ana.Phone, Email: "other@example.com"}, true), nil)
	plain := create(t, s, mk("f", ana, false), nil)
	create(t, s, mk("f", ana, false), nil)
	got, err = s.GetVerification(ctx(), plain.ID)
	require.NoError(t, err)
	assert.False(t, got.Exclusive)
	ended := mk("f", ana, true)
	ended.Status, ended.EndedAt = verify.StatusCanceled, base
	create(t, s, ended, nil)

	// Past its expiry but not yet ended, the first still holds the slot;
	// once it ends, another exclusive one can start.
	late := mk("f", ana, true)
	late.CreatedAt, late.ExpiresAt = at(2*time.Minute), at(3*time.Minute)
	require.ErrorIs(t, s.CreateVerification(ctx(), late, nil), verify.ErrOpenExists, "an expired but open one still counts")
	_, ended2, err := s.Finish(ctx(), first.ID, verify.StatusExpired, at(2*time.Minute))
	require.NoError(t, err)
	require.True(t, ended2)
	create(t, s, late, nil)

	// A clash on the idempotency key too: either error.
	keyed := mk("h", ana, true)
	keyed.IdempotencyKey = "k-" + keyed.ID
	create(t, s, keyed, nil)
	again := mk("h", ana, true)
	again.IdempotencyKey = keyed.IdempotencyKey
	err = s.CreateVerification(ctx(), again, nil)
	assert.True(t, errors.Is(err, verify.ErrDuplicate) || errors.Is(err, verify.ErrOpenExists), "got %v", err)

	// Racing: exactly one succeeds.
	const goroutines = 50
	var won atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := mk("race", ana, true)
			err := s.CreateVerification(ctx(), v, steps(v))
			switch {
			case err == nil:
				won.Add(1)
			case !errors.Is(err, verify.ErrOpenExists):
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, int32(1), won.Load(), "exactly one of %d racing exclusive verifications is stored", goroutines)
	open, err := s.FindOpen(ctx(), "race", ana, base)
	require.NoError(t, err)
	assert.Len(t, open, 1)
}
