package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/combine"
)

// AttemptRight implements verify.GuardedStore: the read of the failure
// counter and the attempt are one transaction (on PostgreSQL under load,
// one statement for the calls of many callers: see rightBatch). A right
// code's Check is then one Store call, and a refused Check one call
// whatever its code.
func (s *Store) AttemptRight(ctx context.Context, id string, hashes [][]byte, now time.Time, guard verify.Guard, onVerified []verify.Count) (verify.VerificationRecord, bool, verify.Counter, error) {
	if err := verify.CheckAttemptCounts(onVerified); err != nil {
		return verify.VerificationRecord{}, false, verify.Counter{}, wrap("attempt", err)
	}
	if s.pgBatches != nil {
		r, err := s.pgBatches.rights.Do(ctx, rightReq{id, hashes, now, guard, onVerified})
		return r.rec, r.verified, r.failures, err
	}
	return s.attemptRightOne(ctx, rightReq{id, hashes, now, guard, onVerified})
}

// rightReq is an AttemptRight call.
type rightReq struct {
	id         string
	hashes     [][]byte
	now        time.Time
	guard      verify.Guard
	onVerified []verify.Count
}

// righted is AttemptRight's answer.
type righted struct {
	rec      verify.VerificationRecord
	verified bool
	failures verify.Counter
}

// rightUpdate returns the conditional update of a right code for n hashes
// ($4 to $n+3) at $2 (whose checkEntry is $3): Attempt's update, only
// where the code matches.
func rightUpdate(n int) conditional {
	match := "FALSE"
	if n > 0 {
		match = `code_hash IN (` + placeholders(4, n+3) + `)`
	}
	set, where := attemptSet(match, "$2", "$3")
	return newConditional(set, where+` AND `+match, true)
}

// rightUpdates holds rightUpdate for up to three secrets.
var rightUpdates = [...]conditional{rightUpdate(0), rightUpdate(1), rightUpdate(2), rightUpdate(3)}

// attemptRightOne is AttemptRight's own transaction: the counter's read,
// then the update, which counts only a matching code.
func (s *Store) attemptRightOne(ctx context.Context, r rightReq) (verify.VerificationRecord, bool, verify.Counter, error) {
	c, args := s.attemptCall(rightUpdates[:], rightUpdate, r.id, r.hashes, r.now)
	var failures verify.Counter
	rec, verified, err := s.update(ctx, "attempt", c, updateHooks{
		before: func(q querier) (bool, error) {
			var err error
			failures, err = readCounter(ctx, q, s.tv, r.guard.Key, r.now)
			return err == nil && r.guard.Refuses(failures, r.now), err
		},
		after: func(q querier, _ verify.VerificationRecord) error {
			_, err := s.applyCounts(ctx, q, r.onVerified, r.now)
			return err
		},
	}, args...)
	if err != nil {
		return verify.VerificationRecord{}, false, verify.Counter{}, err
	}
	// Refused, the record is the zero one; not counted, it is the current
	// one, which a code that does not match leaves out.
	return matching(rec, r.hashes), verified, failures, nil
}

// matching returns rec if one of hashes matches its code, else the zero
// record.
func matching(rec verify.VerificationRecord, hashes [][]byte) verify.VerificationRecord {
	if !verify.MatchHash(rec.CodeHash, hashes) {
		return verify.VerificationRecord{}
	}
	return rec
}

// unjudged answers an AttemptRight that counted nothing though the guard
// let it through: the record as it is if the code matches it, the zero
// record if not, or ErrNotFound.
func (s *Store) unjudged(ctx context.Context, r rightReq) (verify.VerificationRecord, error) {
	rec, _, err := s.current(ctx, "attempt", r.id)
	if err != nil {
		return verify.VerificationRecord{}, err
	}
	return matching(rec, r.hashes), nil
}

// readCounter reads a counter in q at now: the zero Counter if it does not
// exist or has expired.
func readCounter(ctx context.Context, q querier, tv func(time.Time) any, key string, now time.Time) (verify.Counter, error) {
	var c verify.Counter
	err := q.QueryRowContext(ctx, `SELECT value, updated_at, expires_at, not_before FROM counters
		WHERE name = $1 AND expires_at > $2`, key, tv(now)).
		Scan(counterDest(&c)...)
	if errors.Is(err, sql.ErrNoRows) {
		return verify.Counter{}, nil
	}
	return c, err
}

// rightBatch runs a batch of AttemptRight calls, on distinct
// verifications, in one statement (pgRightBatch), and answers each from
// its rows: a call whose guard refused, one that verified, one whose code
// did not match; a matching code that was not counted (the verification
// ended, expired or used its attempts) and an unknown verification are
// read again alone.
func (s *Store) rightBatch(ctx context.Context, batch []*combine.Call[rightReq, righted]) {
	one := func(ctx context.Context, r rightReq) (righted, error) {
		rec, verified, failures, err := s.attemptRightOne(ctx, r)
		return righted{rec, verified, failures}, err
	}
	if len(batch) == 1 || !distinct(batch, func(r rightReq) string { return r.id }) {
		combine.EachAlone(ctx, batch, one)
		return
	}
	byVerification(batch, func(r rightReq) string { return r.id })
	reqs := combine.Reqs(batch)
	args := rightArgs(reqs)
	query := pgRightBatch
	if c, ok := countArgs(reqs, func(r rightReq) (string, time.Time, []verify.Count) { return r.id, r.now, r.onVerified }); ok {
		query, args = pgRightBatchCounting, append(args, c...)
	}
	var (
		failures = make(map[string]verify.Counter)
		matched  = make(map[string]bool)
		found    = make(map[string]bool)
		recs     = make([]verify.VerificationRecord, 0, len(batch))
	)
	err := s.pgBatch(ctx, query, args, func(rows pgx.Rows) error {
		var (
			cur verify.VerificationRecord
			d   deliveryScan
			c   counterRow
			id  string
			m   bool
		)
		vdest := append(append(make([]any, rightLead), verificationDest(&cur)...), append(d.dest(), nil)...)
		// The other kinds' rows fill their columns and skip the rest (nil).
		fdest, mdest := make([]any, len(vdest)), make([]any, len(vdest))
		fdest[1], fdest[2], fdest[3], fdest[4], fdest[5] = &id, &c.value, &c.updatedAt, &c.expiresAt, &c.notBefore
		mdest[1], mdest[6] = &id, &m
		for rows.Next() {
			switch kind := string(rows.RawValues()[0]); kind {
			case "f":
				if err := rows.Scan(fdest...); err != nil {
					return err
				}
				failures[id] = c.Counter()
			case "m":
				if err := rows.Scan(mdest...); err != nil {
					return err
				}
				found[id], matched[id] = true, m
			case "v":
				cur = verify.VerificationRecord{}
				if err := rows.Scan(vdest...); err != nil {
					return err
				}
				recs = appendScanned(recs, cur, &d)
			default:
				return fmt.Errorf("a row of kind %q", kind)
			}
		}
		return nil
	})
	if failed(s, ctx, batch, err, "attempt", one) {
		return
	}
	verified := make(map[string]verify.VerificationRecord, len(recs))
	for _, r := range recs {
		verified[r.ID] = r
	}
	for _, cl := range batch {
		r := cl.Req
		f := failures[r.id]
		switch rec, ok := verified[r.id]; {
		case r.guard.Refuses(f, r.now):
			cl.Res = righted{failures: f}
		case ok:
			cl.Res = righted{rec, true, f}
		case found[r.id] && !matched[r.id]:
			cl.Res = righted{failures: f}
		default: // a match not counted, or no such verification
			rec, err := s.unjudged(ctx, r)
			cl.Res, cl.Err = righted{rec: rec, failures: f}, err
		}
	}
}

// rightArgs are pgRightBatch's arguments for rs.
func rightArgs(rs []rightReq) []any {
	n := len(rs)
	ids, nows, entries, keys, maxes := make([]string, n), make([]time.Time, n), make([]string, n), make([]string, n), make([]int64, n)
	for i, r := range rs {
		ids[i], nows[i], entries[i], keys[i], maxes[i] = r.id, asStored(r.now), checkEntry(r.now), r.guard.Key, r.guard.Max
	}
	starts, hashes := hashSpans(rs, func(r rightReq) [][]byte { return r.hashes })
	return []any{ids, nows, starts, hashes, entries, keys, maxes}
}

// rightLead is how many columns of pgRightBatch's rows come before the
// verification's: the kind, the verification ID, the counter's value and
// times, and whether the code matched.
const rightLead = 7

// pgRightBatch is AttemptRight's statement for arrays of verification IDs
// ($1), the times of their attempts ($2), their code hashes as hashSpans
// gives them ($3, $4), the checkEntry of each time ($5),
// and each call's guard: its counter ($6) and Max ($7). In one snapshot it
// reads the counters (f), the calls their guard lets through and whether
// their code matches (m), and counts the attempts of those that match
// (v). Its rows are of three kinds, told apart by the first column: "f",
// a counter (value and times); "m", whether a call's code matched; "v",
// a verified verification with its deliveries, as withDeliveries, and
// each delivery's seq last, for the order.
var pgRightBatch, pgRightBatchCounting = func() (string, string) {
	set, where := attemptSet(`TRUE`, "r.at", "r.entry")
	vcols := len(strings.Split(verificationReadCols, ","))
	dcols := len(strings.Split(deliveryCols, ","))
	pad := strings.Repeat(", NULL", vcols+dcols+1)
	head := `WITH r AS (SELECT r.vid, r.at, r.entry, r.fkey, r.fmax, ` + pgCallHashes + ` AS hashes
		FROM unnest($1::text[], $2::timestamptz[], $5::text[], $6::text[], $7::bigint[])
			WITH ORDINALITY AS r(vid, at, entry, fkey, fmax, i)),
	f AS (SELECT r.vid, c.value, c.updated_at, c.expires_at, c.not_before,
			c.value >= r.fmax OR (c.not_before IS NOT NULL AND c.not_before > r.at) AS refuses
		FROM r JOIN counters c ON c.name = r.fkey AND c.expires_at > r.at),
	m AS (SELECT r.*, COALESCE(x.code_hash = ANY (r.hashes), FALSE) AS matched
		FROM r JOIN verifications x ON x.id = r.vid
		WHERE NOT EXISTS (SELECT 1 FROM f WHERE f.vid = r.vid AND f.refuses)),
	v AS (UPDATE verifications SET ` + set + ` FROM m AS r
		WHERE verifications.id = r.vid AND r.matched AND ` + where + `
		RETURNING verifications.*),
	p AS (DELETE FROM pending_steps WHERE verification_id IN (SELECT id FROM v))`
	// The verifications first: their columns' types are those of the
	// rows of every kind.
	tail := `
	SELECT 'v', v.id, NULL::bigint, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::boolean, ` +
		prefixed("v", verificationReadCols) + `, ` + prefixed("d", deliveryCols) + `, d.seq
		FROM v LEFT JOIN deliveries d ON d.verification_id = v.id
	UNION ALL SELECT 'f', f.vid, f.value, f.updated_at, f.expires_at, f.not_before, NULL` + pad + ` FROM f
	UNION ALL SELECT 'm', m.vid, NULL, NULL, NULL, NULL, m.matched` + pad + ` FROM m
	ORDER BY 1, 2, ` + strconv.Itoa(rightLead+vcols+dcols-1) + `, ` + strconv.Itoa(rightLead+vcols+dcols+1)
	return head + tail, head + `,
	` + pgCounts(8, `SELECT id FROM v`) + tail
}()
