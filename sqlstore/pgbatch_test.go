package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
)

// The tests below run PostgreSQL's batched statements (see pgbatch.go)
// directly, on batches built to hold every case the statement must answer
// per call, as concurrent callers would fill them.

// batchRecord is a new open verification on flow "flow" for phone, whose
// code hashes to hash.
func batchRecord(id, phone string, hash []byte) verify.VerificationRecord {
	return verify.VerificationRecord{
		ID: id, FlowID: "flow", Status: verify.StatusPending, To: verify.Recipient{Phone: phone},
		CodeHash: hash, SealedCode: []byte("sealed"), Language: "en", FallbackLanguage: "en",
		Steps:     []verify.Step{{Channel: "sms"}},
		CreatedAt: start, ExpiresAt: start.Add(5 * time.Minute), MaxAttempts: 3,
	}
}

func batched(t *testing.T) (*sqlstore.Store, *sqlstore.Batched) {
	t.Helper()
	st := open(t, freshSchema(t))
	return st, st.Batched()
}

func TestBatchedCreate(t *testing.T) {
	ctx := context.Background()
	st, b := batched(t)
	keyed := batchRecord("stored-keyed", "+4740000001", nil)
	keyed.IdempotencyKey = "k1"
	exclusive := batchRecord("stored-exclusive", "+4740000002", nil)
	exclusive.Exclusive = true
	require.NoError(t, st.CreateVerification(ctx, keyed, nil))
	require.NoError(t, st.CreateVerification(ctx, exclusive, nil))

	step := func(id string) []verify.PendingStep {
		return []verify.PendingStep{{Step: 1, DueAt: start.Add(time.Minute)}, {Step: 0, DueAt: start, LeaseUntil: start.Add(time.Minute)}}
	}
	ok1 := batchRecord("ok1", "+4740000003", nil)
	dupKey := batchRecord("dup-key", "+4740000004", nil)
	dupKey.IdempotencyKey = "k1"
	clash := batchRecord("clash", "+4740000002", nil)
	clash.Exclusive = true
	ok2 := batchRecord("ok2", "+4740000005", nil)
	ok2.IdempotencyKey = "k2"
	sameKey := batchRecord("same-key", "+4740000006", nil)
	sameKey.IdempotencyKey = "k2"
	storedID := batchRecord("ok0", "+4740000007", nil)
	require.NoError(t, st.CreateVerification(ctx, storedID, nil))
	sameID := batchRecord("ok0", "+4740000012", nil)
	ended := batchRecord("ended", "+4740000008", nil)
	ended.Status, ended.EndedAt = verify.StatusCanceled, start

	errs := b.Create(ctx,
		[]verify.VerificationRecord{ok1, dupKey, clash, ok2, sameKey, sameID, ended},
		[][]verify.PendingStep{step("ok1"), step("dup-key"), step("clash"), nil, step("same-key"), nil, nil})
	require.NoError(t, errs[0])
	assert.ErrorIs(t, errs[1], verify.ErrDuplicate)
	assert.ErrorIs(t, errs[2], verify.ErrOpenExists)
	require.NoError(t, errs[3])
	assert.ErrorIs(t, errs[4], verify.ErrDuplicate)
	require.Error(t, errs[5], "a second verification with a stored one's ID")
	assert.NotErrorIs(t, errs[5], verify.ErrDuplicate)
	require.NoError(t, errs[6])
	assert.Zero(t, st.RunAlone(), "a clash sent the whole batch to run alone")

	// Each stored verification as CreateVerification stores it, its steps
	// with it; nothing of a refused one.
	for _, want := range []verify.VerificationRecord{ok1, ok2, ended} {
		got, err := st.GetVerification(ctx, want.ID)
		require.NoError(t, err)
		assert.Equal(t, want.To, got.To)
		assert.Equal(t, want.Status, got.Status)
		assert.Equal(t, want.IdempotencyKey, got.IdempotencyKey)
		assert.Equal(t, want.Steps, got.Steps)
		assert.Equal(t, want.ExpiresAt, got.ExpiresAt)
	}
	got, err := st.FindByIdempotencyKey(ctx, "k2")
	require.NoError(t, err)
	assert.Equal(t, "ok2", got.ID)
	assert.Equal(t, 2, countRows(t, st, `pending_steps WHERE verification_id = 'ok1'`))
	assert.Equal(t, 0, countRows(t, st, `pending_steps WHERE verification_id <> 'ok1'`))
	assert.Equal(t, 1, countRows(t, st, `pending_steps WHERE verification_id = 'ok1' AND lease_until IS NOT NULL`))
	assert.Equal(t, 1, countRows(t, st, `verifications WHERE id = 'ended' AND ended_at IS NOT NULL`))
	assert.Equal(t, 6, countRows(t, st, `verifications`))
	got, err = st.GetVerification(ctx, "ok0")
	require.NoError(t, err)
	assert.Equal(t, storedID.To, got.To, "the stored verification is left as it was")

	// Two calls with one ID, and no steps to clash: one is stored, and
	// the other is refused, not answered with the first's success.
	errs = b.Create(ctx,
		[]verify.VerificationRecord{batchRecord("twice", "+4740000013", nil), batchRecord("twice", "+4740000014", nil)},
		[][]verify.PendingStep{nil, nil})
	require.NoError(t, errs[0])
	require.Error(t, errs[1])
	assert.Equal(t, 1, countRows(t, st, `verifications WHERE id = 'twice'`))

	// A value PostgreSQL refuses (a NUL in text) fails the batched
	// statement; every call is then answered alone, and only that one
	// fails.
	bad := batchRecord("bad", "+4740000009", nil)
	bad.Brand = "a\x00b"
	errs = b.Create(ctx,
		[]verify.VerificationRecord{batchRecord("ok3", "+4740000010", nil), bad, batchRecord("ok4", "+4740000011", nil)},
		[][]verify.PendingStep{step("ok3"), step("bad"), nil})
	require.NoError(t, errs[0])
	require.Error(t, errs[1])
	require.NoError(t, errs[2])
	assert.Equal(t, 0, countRows(t, st, `verifications WHERE id = 'bad'`))
	assert.Equal(t, 2, countRows(t, st, `pending_steps WHERE verification_id = 'ok3'`))
}

func TestBatchedDeliveries(t *testing.T) {
	ctx := context.Background()
	st, b := batched(t)
	for _, id := range []string{"v1", "v2", "v3"} {
		require.NoError(t, st.CreateVerification(ctx, batchRecord(id, "+47"+id, nil),
			[]verify.PendingStep{{Step: 0, DueAt: start, LeaseUntil: start.Add(time.Minute)}}))
	}
	delivery := func(id, vid string, step int, status verify.DeliveryStatus) verify.DeliveryRecord {
		return verify.DeliveryRecord{ID: id, VerificationID: vid, Step: step, Channel: "sms", Status: status,
			ProviderID: "p-" + id, CreatedAt: start, UpdatedAt: start}
	}
	changed, errs := b.RecordDeliveries(ctx, []verify.DeliveryRecord{
		delivery("d1", "v1", 0, verify.DeliverySent),
		delivery("dx", "missing", 0, verify.DeliverySent),
		delivery("d2", "v2", 0, verify.DeliveryDelivered),
		delivery("d3", "v3", -1, verify.DeliveryFailed),
	})
	require.NoError(t, errs[0])
	assert.ErrorIs(t, errs[1], verify.ErrNotFound)
	require.NoError(t, errs[2])
	require.NoError(t, errs[3])
	assert.Equal(t, []bool{true, false, true, true}, changed)
	want := map[string]verify.Status{"v1": verify.StatusSent, "v2": verify.StatusDelivered, "v3": verify.StatusPending}
	for id, status := range want {
		v, err := st.GetVerification(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, status, v.Status, id)
		require.Len(t, v.Deliveries, 1, id)
	}
	// A recorded delivery's step is done; a delivery outside the steps
	// (-1) leaves them.
	assert.Equal(t, 0, countRows(t, st, `pending_steps WHERE verification_id IN ('v1', 'v2')`))
	assert.Equal(t, 1, countRows(t, st, `pending_steps WHERE verification_id = 'v3'`))
	assert.Equal(t, 0, countRows(t, st, `deliveries WHERE id = 'dx'`))

	// Forward only: the same report again changes nothing, a late sent
	// after delivered moves nothing back, and failed moves to delivered.
	changed, errs = b.RecordDeliveries(ctx, []verify.DeliveryRecord{
		delivery("d1", "v1", 0, verify.DeliverySent),
		delivery("d2", "v2", 0, verify.DeliverySent),
		delivery("d3", "v3", -1, verify.DeliveryDelivered),
	})
	for _, err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, []bool{false, false, true}, changed)
	want = map[string]verify.Status{"v1": verify.StatusSent, "v2": verify.StatusDelivered, "v3": verify.StatusDelivered}
	for id, status := range want {
		v, err := st.GetVerification(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, status, v.Status, id)
	}
}

func TestBatchedAttempts(t *testing.T) {
	ctx := context.Background()
	st, b := batched(t)
	right, wrong := []byte("right-hash-0123456789abcdef01234"), []byte("wrong-hash-0123456789abcdef01234")
	for _, id := range []string{"right", "wrong", "ended", "last", "expired", "rotated", "nohash"} {
		v := batchRecord(id, "+47"+id, right)
		if id == "last" {
			v.Attempts = v.MaxAttempts - 1
		}
		if id == "expired" {
			v.ExpiresAt = start.Add(-time.Second)
		}
		require.NoError(t, st.CreateVerification(ctx, v, []verify.PendingStep{{Step: 1, DueAt: start.Add(time.Minute)}}))
	}
	_, _, err := st.Finish(ctx, "ended", verify.StatusCanceled, start)
	require.NoError(t, err)
	now := start.Add(time.Second)
	recs, counted, errs := b.Attempts(ctx, []sqlstore.Attempt{
		{ID: "right", Hashes: [][]byte{right}, Now: now},
		{ID: "wrong", Hashes: [][]byte{wrong}, Now: now},
		{ID: "ended", Hashes: [][]byte{right}, Now: now},
		{ID: "missing", Hashes: [][]byte{right}, Now: now},
		{ID: "last", Hashes: [][]byte{wrong}, Now: now},
		{ID: "expired", Hashes: [][]byte{right}, Now: now},
		{ID: "rotated", Hashes: [][]byte{wrong, right}, Now: now}, // the code's hash under each secret
		// No hash at all, between others in the order the batch sorts
		// them into: it matches nothing, and takes none of theirs.
		{ID: "nohash", Now: now},
	})
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.NoError(t, errs[2])
	assert.ErrorIs(t, errs[3], verify.ErrNotFound)
	require.NoError(t, errs[4])
	require.NoError(t, errs[5])
	require.NoError(t, errs[6])
	require.NoError(t, errs[7])
	assert.Equal(t, []bool{true, true, false, false, true, false, true, true}, counted)
	assert.Equal(t, verify.StatusPending, recs[7].Status, "no hash: a wrong code")
	assert.Equal(t, 1, recs[7].Attempts)

	assert.Equal(t, verify.StatusVerified, recs[0].Status)
	assert.Equal(t, 1, recs[0].Attempts)
	assert.Equal(t, now, recs[0].VerifiedAt)
	assert.Nil(t, recs[0].SealedCode, "an ended verification keeps no sealed code")
	assert.Equal(t, verify.StatusPending, recs[1].Status)
	assert.Equal(t, 1, recs[1].Attempts)
	assert.NotNil(t, recs[1].SealedCode)
	assert.Equal(t, verify.StatusCanceled, recs[2].Status)
	assert.Equal(t, 0, recs[2].Attempts)
	assert.Equal(t, verify.StatusMaxAttempts, recs[4].Status)
	assert.Equal(t, verify.StatusPending, recs[5].Status, "an expired verification is ended by ExpireDue, not by a check")
	assert.Equal(t, 0, recs[5].Attempts)
	assert.Equal(t, verify.StatusVerified, recs[6].Status)
	// The steps of those the attempt ended are gone with them.
	assert.Equal(t, 0, countRows(t, st, `pending_steps WHERE verification_id IN ('right', 'last', 'rotated', 'ended')`))
	assert.Equal(t, 2, countRows(t, st, `pending_steps WHERE verification_id IN ('wrong', 'expired')`))
	for i, id := range []string{"right", "wrong", "last"} {
		v, err := st.GetVerification(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, recs[[]int{0, 1, 4}[i]].Status, v.Status, id)
		assert.Equal(t, recs[[]int{0, 1, 4}[i]].Attempts, v.Attempts, id)
	}
}

func TestBatchedCounters(t *testing.T) {
	ctx := context.Background()
	st, b := batched(t)
	for _, k := range []string{"a", "b"} {
		res, err := st.Take(ctx, start, []verify.Take{{Key: k, Delta: 2, Max: verify.NoLimit, ExpiresAt: start.Add(time.Minute)}})
		require.NoError(t, err)
		require.True(t, res.OK)
	}
	later := start.Add(2 * time.Minute)
	got, errs := b.Counters(ctx, []string{"a", "missing", "b", "a"}, []time.Time{start, start, later, start.Add(time.Second)})
	for _, err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, int64(2), got[0].Value)
	assert.Equal(t, start.Add(time.Minute), got[0].ExpiresAt)
	assert.Equal(t, verify.Counter{}, got[1])
	assert.Equal(t, verify.Counter{}, got[2], "expired at its time")
	assert.Equal(t, got[0], got[3], "one key twice")
}

// TestBatchedTakes: the calls of a batch are decided in turn, each on the
// counters as the ones before it left them, all or nothing per call, as
// if they had run one after another.
func TestBatchedTakes(t *testing.T) {
	ctx := context.Background()
	st, b := batched(t)
	exp := start.Add(time.Hour)
	one := func(key string, max int64) []verify.Take {
		return []verify.Take{{Key: key, Delta: 1, Max: max, ExpiresAt: exp}}
	}
	calls := [][]verify.Take{
		one("k", 3), one("k", 3), one("a", 10), one("k", 3),
		{{Key: "a", Delta: 1, Max: 10, ExpiresAt: exp}, {Key: "k", Delta: 1, Max: 3, ExpiresAt: exp}}, // refused by k: a stays
		one("k", 3),
		{{Key: "k", Delta: -1, Max: verify.NoLimit}}, // a refund makes room
		one("k", 3),
		{{Key: "z", Delta: 0, Max: verify.NoLimit}}, // a check changes nothing
	}
	nows := make([]time.Time, len(calls))
	for i := range nows {
		nows[i] = start.Add(time.Duration(i) * time.Millisecond)
	}
	res, errs := b.Takes(ctx, nows, calls)
	var ok []bool
	for i, err := range errs {
		require.NoError(t, err)
		ok = append(ok, res[i].OK)
	}
	assert.Equal(t, []bool{true, true, true, true, false, false, true, true, true}, ok)
	assert.Equal(t, 1, res[4].Refused, "the second take (k) refused")
	assert.Equal(t, int64(3), res[3].Counters[0].Value)
	assert.Equal(t, int64(2), res[6].Counters[0].Value)
	for key, want := range map[string]int64{"k": 3, "a": 1, "z": 0} {
		c, err := st.GetCounter(ctx, key, start.Add(time.Second))
		require.NoError(t, err)
		assert.Equal(t, want, c.Value, key)
	}
	// A batch in which every call is refused writes nothing.
	res, errs = b.Takes(ctx, nows[:2], [][]verify.Take{one("k", 3), one("k", 3)})
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	assert.False(t, res[0].OK)
	assert.False(t, res[1].OK)
}

// TestConcurrentCallsShareStatements releases 64 Send+Check pairs at once
// on three engines sharing one PostgreSQL Store's database: every pair
// verifies, and the calls went through shared statements.
func TestConcurrentCallsShareStatements(t *testing.T) {
	c := newCluster(t, freshSchema(t), 3, fallbackFlow)
	const callers = 64
	var (
		ready, wg sync.WaitGroup
		gate      = make(chan struct{})
		failures  = make(chan error, callers)
	)
	ready.Add(callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			eng := c.inst[i%len(c.inst)].eng
			ctx := context.Background()
			ready.Done()
			<-gate
			v, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: fmt.Sprintf("+1%03d5550%03d", 201+i, i), Email: fmt.Sprintf("u%d@example.com", i)}})
			if err != nil {
				failures <- err
				return
			}
			msgs := c.sms.sent(v.ID)
			if len(msgs) != 1 {
				failures <- assert.AnError
				return
			}
			if _, err := eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: msgs[0].Code}); err != nil {
				failures <- err
			}
		}()
	}
	ready.Wait()
	close(gate)
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	var batches, calls int64
	for _, in := range c.inst {
		b, n := in.store.Combined()
		batches, calls = batches+b, calls+n
	}
	t.Logf("%d calls in %d statements", calls, batches)
	assert.Greater(t, calls, batches, "no two calls shared a statement")
}

// TestBatchesLockInOneOrder: three Stores on one database record
// deliveries and count attempts on the same verifications, each caller in
// its own order, 96 at once. Every batched statement locks the rows in
// the order of their IDs, so none deadlocks with another (PostgreSQL
// would abort one, and its calls would be run again one at a time).
func TestBatchesLockInOneOrder(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t)
	stores := []*sqlstore.Store{open(t, dsn), open(t, dsn), open(t, dsn)}
	const verifications, callers = 24, 96
	ids := make([]string, verifications)
	for i := range ids {
		ids[i] = fmt.Sprintf("v%02d", i)
		v := batchRecord(ids[i], fmt.Sprintf("+1%03d5550100", 201+i), []byte("right"))
		v.MaxAttempts = 1_000_000
		require.NoError(t, stores[0].CreateVerification(ctx, v, nil))
	}
	var (
		wg   sync.WaitGroup
		gate = make(chan struct{})
	)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := stores[c%len(stores)]
			order := slices.Clone(ids)
			rand.New(rand.NewPCG(uint64(c), 0)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			<-gate
			for i, id := range order {
				var err error
				if (c+i)%2 == 0 {
					_, err = st.RecordDelivery(ctx, verify.DeliveryRecord{ID: fmt.Sprintf("d-%d-%d", c, i), VerificationID: id,
						Step: -1, Channel: "sms", Status: verify.DeliverySent, CreatedAt: start, UpdatedAt: start})
				} else {
					_, _, err = st.Attempt(ctx, id, [][]byte{[]byte("wrong")}, start)
				}
				assert.NoError(t, err)
			}
		}()
	}
	close(gate)
	wg.Wait()
	var alone int64
	for _, st := range stores {
		alone += st.RunAlone()
	}
	assert.Zero(t, alone, "a batched statement failed (a deadlock?) and its calls ran again one at a time")
	var attempts, deliveries int
	require.NoError(t, stores[0].DB().QueryRowContext(ctx, `SELECT sum(attempts) FROM verifications`).Scan(&attempts))
	require.NoError(t, stores[0].DB().QueryRowContext(ctx, `SELECT count(*) FROM deliveries`).Scan(&deliveries))
	assert.Equal(t, callers*verifications, attempts+deliveries, "every attempt and delivery counted once")
}

// TestBatchedCallsOnOneVerification: two attempts, or two deliveries, on
// one verification in one batch (which the Store's combiners keep apart)
// are each counted and recorded, not answered as one.
func TestBatchedCallsOnOneVerification(t *testing.T) {
	ctx := context.Background()
	st, b := batched(t)
	require.NoError(t, st.CreateVerification(ctx, batchRecord("v", "+4740000001", []byte("right")), nil))
	wrong := [][]byte{[]byte("wrong")}
	_, counted, errs := b.Attempts(ctx, []sqlstore.Attempt{{ID: "v", Hashes: wrong, Now: start}, {ID: "v", Hashes: wrong, Now: start}})
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	assert.Equal(t, []bool{true, true}, counted)
	v, err := st.GetVerification(ctx, "v")
	require.NoError(t, err)
	assert.Equal(t, 2, v.Attempts, "both attempts counted")

	d := func(id string, status verify.DeliveryStatus) verify.DeliveryRecord {
		return verify.DeliveryRecord{ID: id, VerificationID: "v", Step: -1, Channel: "sms", Status: status, CreatedAt: start, UpdatedAt: start}
	}
	changed, errs := b.RecordDeliveries(ctx, []verify.DeliveryRecord{d("d1", verify.DeliverySent), d("d2", verify.DeliveryDelivered)})
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	assert.Equal(t, []bool{true, true}, changed)
	v, err = st.GetVerification(ctx, "v")
	require.NoError(t, err)
	assert.Equal(t, verify.StatusDelivered, v.Status)
	assert.Len(t, v.Deliveries, 2)
}

// TestBatchedCounts: the counts of a batch of creations and of attempts
// are applied with the calls they belong to, summed per counter, and each
// caller gets the values a serial run in batch order gives; a call that
// clashes, and runs again alone, counts nothing more than it should.
func TestBatchedCounts(t *testing.T) {
	ctx := context.Background()
	st, b := batched(t)
	keyed := batchRecord("stored-keyed", "+4740000001", nil)
	keyed.IdempotencyKey = "k1"
	require.NoError(t, st.CreateVerification(ctx, keyed, nil))
	// An expired counter starts again; a live one adds.
	_, err := st.Take(ctx, start.Add(-2*time.Hour), []verify.Take{{Key: "old", Delta: 5, Max: verify.NoLimit, ExpiresAt: start.Add(-time.Hour)}})
	require.NoError(t, err)
	_, err = st.Take(ctx, start, []verify.Take{{Key: "live", Delta: 10, Max: verify.NoLimit, ExpiresAt: start.Add(time.Hour)}})
	require.NoError(t, err)

	cnt := func(key string, delta int64) verify.Count {
		return verify.Count{Key: key, Delta: delta, ExpiresAt: start.Add(2 * time.Hour)}
	}
	hash := []byte("0123456789abcdef0123456789abcdef")
	a, c := batchRecord("a", "+4740000003", hash), batchRecord("c", "+4740000005", hash)
	dupKey := batchRecord("dup-key", "+4740000004", nil)
	dupKey.IdempotencyKey = "k1"
	none := batchRecord("none", "+4740000006", hash)
	// A guard that refuses (a block), and one that lets through.
	_, err = st.Take(ctx, start, []verify.Take{{Key: "block:+47400", Delta: 1, Max: verify.NoLimit, ExpiresAt: start.Add(time.Hour)}})
	require.NoError(t, err)
	blocked, open := batchRecord("blocked", "+4740000008", hash), batchRecord("open", "+4740000009", hash)
	counters, errs := b.CreateCounting(ctx,
		[]verify.VerificationRecord{a, dupKey, c, none, blocked, open},
		[][]verify.PendingStep{nil, nil, nil, nil, nil, nil},
		[]verify.Guard{{}, {}, {}, {}, {Key: "block:+47400", Max: 1}, {Key: "block:+47401", Max: 1}},
		[][]verify.Count{{cnt("old", 1), cnt("live", 2)}, {cnt("live", 100)}, {cnt("live", 3), cnt("old", 4)}, nil, {cnt("live", 1000)}, nil})
	require.NoError(t, errs[0])
	assert.ErrorIs(t, errs[1], verify.ErrDuplicate)
	require.NoError(t, errs[2])
	require.NoError(t, errs[3])
	var refused *verify.RefusedError
	require.ErrorAs(t, errs[4], &refused, "a guard that refuses")
	assert.Equal(t, int64(1), refused.Counter.Value)
	_, err = st.GetVerification(ctx, "blocked")
	assert.ErrorIs(t, err, verify.ErrNotFound)
	require.NoError(t, errs[5], "a guard that lets through")
	_, err = st.GetVerification(ctx, "open")
	require.NoError(t, err)
	values := func(cs []verify.Counter) []int64 {
		var v []int64
		for _, c := range cs {
			v = append(v, c.Value)
		}
		return v
	}
	assert.Equal(t, []int64{1, 12}, values(counters[0]), "the first call's counters, as if it ran first")
	assert.Nil(t, counters[1], "a refused call has no counters")
	assert.Equal(t, []int64{15, 5}, values(counters[2]), "the third call's, after the first's")
	assert.Empty(t, counters[3])
	for key, want := range map[string]int64{"old": 5, "live": 15} {
		got, err := st.GetCounter(ctx, key, start)
		require.NoError(t, err)
		assert.Equal(t, want, got.Value, key)
		assert.Equal(t, start.Add(2*time.Hour), got.ExpiresAt, key)
	}

	// Attempts: only those that verify count.
	wrong := []byte("fedcba9876543210fedcba9876543210")
	d := batchRecord("d", "+4740000007", hash)
	require.NoError(t, st.CreateVerification(ctx, d, nil))
	recs, counted, errs := b.Attempts(ctx, []sqlstore.Attempt{
		{ID: "a", Hashes: [][]byte{hash}, Now: start, Counts: []verify.Count{cnt("ok", 1)}},
		{ID: "c", Hashes: [][]byte{wrong}, Now: start, Counts: []verify.Count{cnt("ok", 1)}},
		{ID: "d", Hashes: [][]byte{hash}, Now: start, Counts: []verify.Count{cnt("ok", 1), cnt("live", 1)}},
		{ID: "none", Hashes: [][]byte{hash}, Now: start},
	})
	for i := range errs {
		require.NoError(t, errs[i])
		assert.True(t, counted[i])
	}
	assert.Equal(t, verify.StatusVerified, recs[0].Status)
	assert.Equal(t, verify.StatusPending, recs[1].Status)
	for key, want := range map[string]int64{"ok": 2, "live": 16} {
		got, err := st.GetCounter(ctx, key, start)
		require.NoError(t, err)
		assert.Equal(t, want, got.Value, key)
	}
	assert.Zero(t, st.RunAlone(), "the batches ran as batches")
}

// TestBatchedLimits: a batch of creations with Limits is decided as the
// calls run one after another in batch order: a call a Limit refuses
// stores and counts nothing; a guard is decided before the Limits; and
// when a call allowed before another is not stored (its idempotency key
// clashes), the call its count would have refused is decided again, and
// stored.
func TestBatchedLimits(t *testing.T) {
	ctx := context.Background()
	st, b := batched(t)
	keyed := batchRecord("stored-keyed", "+4741000001", nil)
	keyed.IdempotencyKey = "k2"
	require.NoError(t, st.CreateVerification(ctx, keyed, nil))
	expires := start.Add(time.Hour)
	for _, tk := range []verify.Take{
		{Key: "rate:r", Delta: 1, Max: verify.NoLimit, ExpiresAt: expires},
		{Key: "rate:q", Delta: 1, Max: verify.NoLimit, ExpiresAt: expires},
		{Key: "block:+47410", Delta: 1, Max: verify.NoLimit, ExpiresAt: expires},
	} {
		_, err := st.Take(ctx, start, []verify.Take{tk})
		require.NoError(t, err)
	}
	limit := func(key string, max int64) verify.Count {
		return verify.Count{Key: key, Delta: 1, ExpiresAt: expires, Limit: max}
	}
	conv := verify.Count{Key: "conv", Delta: 1, ExpiresAt: expires}
	hash := []byte("0123456789abcdef0123456789abcdef")
	first, second, third := batchRecord("first", "+4741000002", hash), batchRecord("second", "+4741000003", hash), batchRecord("third", "+4741000004", hash)
	clash := batchRecord("clash", "+4741000005", nil)
	clash.IdempotencyKey = "k2"
	both, fresh := batchRecord("both", "+4741000006", hash), batchRecord("fresh", "+4741000007", hash)
	values := func(cs []verify.Counter) []int64 {
		var v []int64
		for _, c := range cs {
			v = append(v, c.Value)
		}
		return v
	}
	// A batch that passes no Limit is one statement.
	fits, alsoFits := batchRecord("fits", "+4741000008", hash), batchRecord("also-fits", "+4741000009", hash)
	counters, errs := b.CreateCounting(ctx, []verify.VerificationRecord{fits, alsoFits}, [][]verify.PendingStep{nil, nil},
		[]verify.Guard{{}, {}}, [][]verify.Count{{limit("rate:f", 2), conv}, {limit("rate:f", 2)}})
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	assert.Equal(t, []int64{1, 1}, values(counters[0]))
	assert.Equal(t, []int64{2}, values(counters[1]))
	assert.Zero(t, st.LockedCreates(), "no Limit was passed: one statement")
	require.NoError(t, st.DeleteCounter(ctx, "conv"))

	counters, errs = b.CreateCounting(ctx,
		[]verify.VerificationRecord{first, clash, second, third, both, fresh},
		[][]verify.PendingStep{nil, nil, nil, nil, nil, nil},
		[]verify.Guard{{}, {}, {}, {}, {Key: "block:+47410", Max: 1}, {Key: "block:+47411", Max: 1}},
		[][]verify.Count{{conv, limit("rate:r", 3)}, {limit("rate:r", 3)}, {conv, limit("rate:r", 3)}, {conv, limit("rate:r", 3)},
			{limit("rate:q", 1)}, {limit("rate:q2", 1)}})
	assert.Equal(t, int64(1), st.LockedCreates(), "a Limit was passed: decided under the counters' locks")
	require.NoError(t, errs[0])
	assert.Equal(t, []int64{1, 2}, values(counters[0]), "the first call, as if alone")
	assert.ErrorIs(t, errs[1], verify.ErrDuplicate, "the clash")
	require.NoError(t, errs[2], "the clash counted nothing, so the second call fits")
	assert.Equal(t, []int64{2, 3}, values(counters[2]))
	var refused *verify.RefusedError
	require.ErrorAs(t, errs[3], &refused, "the third is over the Limit")
	assert.Equal(t, 1, refused.Refused)
	assert.Equal(t, int64(3), refused.Counter.Value)
	assert.Equal(t, time.Hour, refused.RetryAfter, "until the counter expires")
	require.ErrorAs(t, errs[4], &refused, "blocked and over its Limit")
	assert.Equal(t, -1, refused.Refused, "the guard is decided first")
	require.NoError(t, errs[5])
	assert.Equal(t, []int64{1}, values(counters[5]))
	for id, want := range map[string]bool{"first": true, "clash": false, "second": true, "third": false, "both": false, "fresh": true} {
		_, err := st.GetVerification(ctx, id)
		if want {
			assert.NoError(t, err, id)
		} else {
			assert.ErrorIs(t, err, verify.ErrNotFound, id)
		}
	}
	for key, want := range map[string]int64{"rate:r": 3, "rate:q": 1, "rate:q2": 1, "conv": 2} {
		got, err := st.GetCounter(ctx, key, start)
		require.NoError(t, err)
		assert.Equal(t, want, got.Value, key)
	}
	// One counter counted without a Limit, then with one it passes: the
	// second call is decided on the first's count.
	plain, capped := batchRecord("plain", "+4741000010", hash), batchRecord("capped", "+4741000011", hash)
	mixed := verify.Count{Key: "rate:mixed", Delta: 1, ExpiresAt: expires}
	counters, errs = b.CreateCounting(ctx, []verify.VerificationRecord{plain, capped}, [][]verify.PendingStep{nil, nil},
		[]verify.Guard{{}, {}}, [][]verify.Count{{mixed}, {limit("rate:mixed", 1)}})
	require.NoError(t, errs[0])
	assert.Equal(t, []int64{1}, values(counters[0]))
	require.ErrorAs(t, errs[1], &refused, "1 + 1 > 1")
	mixedCounter, err := st.GetCounter(ctx, "rate:mixed", start)
	require.NoError(t, err)
	assert.Equal(t, int64(1), mixedCounter.Value)
	_, err = st.GetVerification(ctx, "capped")
	assert.ErrorIs(t, err, verify.ErrNotFound, "a refused verification is deleted again, its steps with it")
}

// TestBatchedRights: one batch of AttemptRight calls holds every kind of
// answer, each as the call alone gives it: refused by its guard (locked
// out, or waiting), verified (with its counts), a wrong code, a matching
// code on an ended verification, an unknown verification, and a guard
// whose counter has expired.
func TestBatchedRights(t *testing.T) {
	ctx := context.Background()
	st, b := batched(t)
	hash := []byte("0123456789abcdef0123456789abcdef")
	wrong := []byte("fedcba9876543210fedcba9876543210")
	for _, id := range []string{"locked", "waiting", "right", "wrong", "ended", "expired-guard"} {
		require.NoError(t, st.CreateVerification(ctx, batchRecord(id, "+47400000"+strconv.Itoa(len(id)), hash), nil))
	}
	_, ended, err := st.Attempt(ctx, "ended", [][]byte{hash}, start)
	require.NoError(t, err)
	require.True(t, ended)
	take := func(key string, n int64, now time.Time, b verify.Backoff, expires time.Time) {
		_, err := st.Take(ctx, now, []verify.Take{{Key: key, Delta: n, Max: verify.NoLimit, ExpiresAt: expires, Backoff: b}})
		require.NoError(t, err)
	}
	take("fail:locked", 3, start, verify.Backoff{}, start.Add(time.Hour))
	take("fail:waiting", 1, start, verify.Backoff{Base: time.Minute}, start.Add(time.Hour))
	take("fail:right", 1, start, verify.Backoff{}, start.Add(time.Hour))
	take("fail:expired-guard", 3, start.Add(-2*time.Hour), verify.Backoff{}, start.Add(-time.Hour))
	now := start.Add(time.Second)
	g := func(key string) verify.Guard { return verify.Guard{Key: "fail:" + key, Max: 3} }
	count := []verify.Count{{Key: "conv:ok:x", Delta: 1, ExpiresAt: start.Add(time.Hour)}}
	res, errs := b.Rights(ctx, []sqlstore.Right{
		{ID: "locked", Hashes: [][]byte{hash}, Now: now, Guard: g("locked"), Counts: count},
		{ID: "waiting", Hashes: [][]byte{hash}, Now: now, Guard: g("waiting"), Counts: count},
		{ID: "right", Hashes: [][]byte{wrong, hash}, Now: now, Guard: g("right"), Counts: count},
		{ID: "wrong", Hashes: [][]byte{wrong}, Now: now, Guard: g("wrong"), Counts: count},
		{ID: "ended", Hashes: [][]byte{hash}, Now: now, Guard: g("ended"), Counts: count},
		{ID: "missing", Hashes: [][]byte{hash}, Now: now, Guard: g("missing"), Counts: count},
		{ID: "expired-guard", Hashes: [][]byte{hash}, Now: now, Guard: g("expired-guard")},
	})
	for i, err := range errs {
		if i == 5 {
			assert.ErrorIs(t, err, verify.ErrNotFound, "missing")
			continue
		}
		require.NoError(t, err, i)
	}
	assert.Equal(t, sqlstore.RightAnswer{Failures: res[0].Failures}, res[0], "locked: refused, nothing else")
	assert.Equal(t, int64(3), res[0].Failures.Value)
	assert.Equal(t, sqlstore.RightAnswer{Failures: res[1].Failures}, res[1], "waiting: refused")
	assert.Equal(t, start.Add(time.Minute), res[1].Failures.NotBefore)
	assert.True(t, res[2].Verified, "right")
	assert.Equal(t, verify.StatusVerified, res[2].Rec.Status)
	assert.Equal(t, "right", res[2].Rec.ID)
	assert.Equal(t, int64(1), res[2].Failures.Value)
	assert.Equal(t, sqlstore.RightAnswer{}, res[3], "wrong: the zero record, no failures")
	assert.False(t, res[4].Verified)
	assert.Equal(t, "ended", res[4].Rec.ID, "a match on an ended verification: its record")
	assert.Equal(t, verify.StatusVerified, res[4].Rec.Status)
	assert.True(t, res[6].Verified, "an expired counter does not refuse")
	assert.Zero(t, res[6].Failures)
	c, err := st.GetCounter(ctx, "conv:ok:x", now)
	require.NoError(t, err)
	assert.Equal(t, int64(1), c.Value, "the one verified with counts counted")
	for id, want := range map[string]int{"locked": 0, "waiting": 0, "wrong": 0, "right": 1} {
		got, err := st.GetVerification(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, want, got.Attempts, id)
	}
	assert.Zero(t, st.RunAlone(), "the batch ran as a batch")
}

// TestLimitedCreateLockOrder: a creation with Limits writes the
// verification before it locks the counters, as every statement that
// stores a verification does. Another instance's transaction inserts an
// exclusive verification for a recipient and, while this Store's creation
// of one for the same recipient waits for it, counts on the counter that
// creation's Limit names: nothing deadlocks, the other transaction
// commits, and the creation answers ErrOpenExists. Both on its own and in
// a batch decided under the counters' locks.
func TestLimitedCreateLockOrder(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t)
	st := open(t, dsn)
	b := st.Batched()
	other := open(t, dsn) // another instance
	hash := []byte("0123456789abcdef0123456789abcdef")
	template := batchRecord("template", "+4743000000", hash)
	require.NoError(t, st.CreateVerification(ctx, template, nil))
	limit := []verify.Count{{Key: "rate:lock-order", Delta: 1, ExpiresAt: start.Add(time.Hour), Limit: 100}}
	waiting := func() int {
		var n int
		require.NoError(t, other.DB().QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n))
		return n
	}
	for i, inBatch := range []bool{false, true} {
		phone := "+474300000" + strconv.Itoa(i+1)
		tx, err := other.DB().BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, `INSERT INTO verifications (id, flow_id, foreign_id, status, to_phone, to_email,
				ip_address, idempotency_key, request_hash, brand, language, fallback_language, code_hash, sealed_code,
				charset, code_length, attempts, max_attempts, sends, last_sent_at, steps, allowed_ips,
				created_at, expires_at, verified_at, ended_at, exclusive)
			SELECT $1, flow_id, foreign_id, status, $2, to_email,
				ip_address, idempotency_key, request_hash, brand, language, fallback_language, code_hash, sealed_code,
				charset, code_length, attempts, max_attempts, sends, last_sent_at, steps, allowed_ips,
				created_at, expires_at, verified_at, ended_at, TRUE
			FROM verifications WHERE id = 'template'`, "other-"+phone, phone)
		require.NoError(t, err)

		v := batchRecord("mine-"+phone, phone, hash)
		v.Exclusive = true
		done := make(chan error, 1)
		go func() {
			if !inBatch {
				_, err := st.CreateVerificationCounting(ctx, v, nil, verify.Guard{}, limit)
				done <- err
				return
			}
			st.LockNextCreates(1)
			w := batchRecord("mine-alone-"+phone, "+474309999"+strconv.Itoa(i), hash)
			_, errs := b.CreateCounting(ctx, []verify.VerificationRecord{v, w}, [][]verify.PendingStep{nil, nil},
				[]verify.Guard{{}, {}}, [][]verify.Count{limit, limit})
			done <- errors.Join(errs[0], errs[1])
		}()
		for deadline := time.Now().Add(10 * time.Second); waiting() == 0; time.Sleep(5 * time.Millisecond) {
			require.True(t, time.Now().Before(deadline), "the creation never waited for the other transaction")
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO counters (name, value, updated_at, expires_at) VALUES ($1, 1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET value = counters.value + 1`, limit[0].Key, start, start.Add(time.Hour))
		require.NoError(t, err, "the other transaction counts without a deadlock")
		require.NoError(t, tx.Commit())
		err = <-done
		assert.ErrorIs(t, err, verify.ErrOpenExists, "in a batch: %v", inBatch)
		var pe *pgconn.PgError
		assert.False(t, errors.As(err, &pe), "no database error: %v", err)
		assert.Zero(t, st.RunAlone(), "no batch failed (a deadlock's victim runs again call by call)")
	}
}

// TestBatchedHashesStayWithTheirCall: in batches of 2 to 13 calls, each
// carrying none to three other verifications' code hashes and sometimes its
// own, in both batched Check statements, a call verifies exactly when its
// own hash is among those it carries: no call is judged by another's.
func TestBatchedHashesStayWithTheirCall(t *testing.T) {
	ctx := context.Background()
	st, b := batched(t)
	rng := rand.New(rand.NewPCG(1, 2)) // the same batches every run
	hashOf := func(id string) []byte { return []byte(fmt.Sprintf("%-32s", "h-"+id)) }
	now := start.Add(time.Second)
	n := 0
	for round := range 60 {
		k := 2 + rng.IntN(12)
		ids := make([]string, k)
		for i := range ids {
			n++
			// Random prefixes, so that the batch's own order (by ID) is
			// not the calls'.
			ids[i] = fmt.Sprintf("v%03d-%d", rng.IntN(1000), n)
			require.NoError(t, st.CreateVerification(ctx, batchRecord(ids[i], fmt.Sprintf("+47%08d", n), hashOf(ids[i])), nil))
		}
		want := make([]bool, k)
		hashes := func(i int) [][]byte {
			var hs [][]byte
			for j := rng.IntN(4); j > 0; j-- {
				if other := ids[rng.IntN(k)]; other != ids[i] {
					hs = append(hs, hashOf(other))
				}
			}
			if rng.IntN(3) == 0 {
				hs = append(hs, hashOf(ids[i]))
				want[i] = true
			}
			return hs
		}
		if round%2 == 0 {
			as := make([]sqlstore.Attempt, k)
			for i := range as {
				as[i] = sqlstore.Attempt{ID: ids[i], Hashes: hashes(i), Now: now}
			}
			recs, _, errs := b.Attempts(ctx, as)
			for i := range as {
				require.NoError(t, errs[i])
				require.Equal(t, want[i], recs[i].Status == verify.StatusVerified, "round %d, call %d (%s)", round, i, ids[i])
			}
			continue
		}
		rs := make([]sqlstore.Right, k)
		for i := range rs {
			rs[i] = sqlstore.Right{ID: ids[i], Hashes: hashes(i), Now: now, Guard: verify.Guard{Key: "fail:" + ids[i], Max: 3},
				Counts: []verify.Count{{Key: "c:" + ids[i], Delta: 1, ExpiresAt: start.Add(time.Hour)}}}
		}
		res, errs := b.Rights(ctx, rs)
		for i := range rs {
			require.NoError(t, errs[i])
			require.Equal(t, want[i], res[i].Verified, "round %d, call %d (%s)", round, i, ids[i])
		}
	}
	assert.Zero(t, st.RunAlone(), "every batch ran as a batch")
}
