package sqlstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/testutil"
	"github.com/openverify/verify/sqlstore"
)

// orphans counts the deliveries and pending steps whose verification is
// gone.
func orphans(t *testing.T, st *sqlstore.Store) (deliveries, steps int) {
	t.Helper()
	const q = `SELECT COUNT(*) FROM %s c WHERE NOT EXISTS (SELECT 1 FROM verifications v WHERE v.id = c.verification_id)`
	require.NoError(t, st.DB().QueryRow(fmt.Sprintf(q, "deliveries")).Scan(&deliveries))
	require.NoError(t, st.DB().QueryRow(fmt.Sprintf(q, "pending_steps")).Scan(&steps))
	return deliveries, steps
}

// TestPurgeTakesChildren: a verification's deliveries and pending steps go
// with it, when Purge deletes it while late receipts for it are being
// recorded on another Store, and when it is deleted by hand (as an engine
// of an older version purges, or an operator).
func TestPurgeTakesChildren(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := b.newDSN(t)
			st, other := open(t, dsn), open(t, dsn)
			delivery := func(vid, id string, status verify.DeliveryStatus) verify.DeliveryRecord {
				return verify.DeliveryRecord{ID: id, VerificationID: vid, Step: 0, Channel: "sms", Status: status,
					CreatedAt: start, UpdatedAt: start}
			}
			const ended, open = 48, 4
			steps := []verify.PendingStep{{Step: 0, DueAt: start, LeaseUntil: start.Add(time.Minute)}, {Step: 1, DueAt: start.Add(time.Minute)}}
			for i := range ended + open {
				id := fmt.Sprintf("v%02d", i)
				require.NoError(t, st.CreateVerification(ctx, batchRecord(id, fmt.Sprintf("+47400%05d", i), nil), steps))
				_, err := st.RecordDelivery(ctx, delivery(id, id+"-0", verify.DeliverySent))
				require.NoError(t, err)
				if i < ended {
					_, done, err := st.Finish(ctx, id, verify.StatusCanceled, start)
					require.NoError(t, err)
					require.True(t, done)
				}
			}

			// Late receipts for the ended verifications (each a new
			// delivery row) race Purges on another Store.
			later := start.Add(time.Hour)
			var purged atomic.Int64
			testutil.AtOnce(ended+4, func(i int) {
				if i >= ended {
					for {
						n, err := other.Purge(ctx, later, 5)
						if !assert.NoError(t, err) || n == 0 {
							return
						}
						purged.Add(int64(n))
					}
				}
				id := fmt.Sprintf("v%02d", i)
				_, err := st.RecordDelivery(ctx, delivery(id, id+"-late", verify.DeliveryDelivered))
				if err != nil {
					assert.ErrorIs(t, err, verify.ErrNotFound, "a receipt after the purge finds nothing")
				}
			})
			for {
				n, err := st.Purge(ctx, later, 100)
				require.NoError(t, err)
				if n == 0 {
					break
				}
				purged.Add(int64(n))
			}
			assert.Equal(t, int64(ended), purged.Load())
			assert.Equal(t, open, countRows(t, st, "verifications"))
			d, p := orphans(t, st)
			assert.Zero(t, d, "deliveries of purged verifications")
			assert.Zero(t, p, "pending steps of purged verifications")
			assert.Equal(t, open, countRows(t, st, "deliveries"), "the open verifications keep their deliveries")
			assert.Equal(t, open, countRows(t, st, "pending_steps"), "and their next steps")

			_, err := st.DB().ExecContext(ctx, `DELETE FROM verifications WHERE id IN ('v48', 'v49')`)
			require.NoError(t, err)
			d, p = orphans(t, st)
			assert.Zero(t, d, "deliveries of verifications deleted by hand")
			assert.Zero(t, p, "pending steps of verifications deleted by hand")
			assert.Equal(t, 2, countRows(t, st, "deliveries"))
			assert.Equal(t, 2, countRows(t, st, "pending_steps"))
		})
	}
}
