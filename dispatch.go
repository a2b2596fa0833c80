package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openverify/verify/internal/lazydeadline"
)

// groupEnd returns the index after the group of steps that starts at
// start: the step itself and the send-anyway steps (After 0) that follow it.
func groupEnd(steps []Step, start int) int {
	end := start + 1
	for end < len(steps) && steps[end].After == 0 {
		end++
	}
	return end
}

// groupStart returns the index of the first step of step's group.
func groupStart(steps []Step, step int) int {
	for step > 0 && steps[step].After == 0 {
		step--
	}
	return step
}

// schedule plans the steps from index from on, as if that step's group
// were started at now: that group is due now and leased until leaseUntil
// (claimed by the caller), each later group is due its After after the one
// before it.
func schedule(id string, steps []Step, from int, now, leaseUntil time.Time) []PendingStep {
	out := make([]PendingStep, 0, len(steps)-from)
	due := now
	for i := from; i < len(steps); i++ {
		p := PendingStep{VerificationID: id, Step: i}
		if i > from && steps[i].After > 0 {
			due = due.Add(steps[i].After)
		}
		p.DueAt = due
		if due.Equal(now) {
			p.LeaseUntil, p.Tries = leaseUntil, 1
		}
		out = append(out, p)
	}
	return out
}

// deliver sends one flow step that the caller has claimed (p, with its
// lease and tries), records the delivery (which completes the step) and, if
// the step's whole group has now failed, moves on to the next group at
// once. It returns the delivery and how many steps it sent in all; the
// error is a Store failure.
//
// Right before the step is handed to its channel (after its message is
// rendered, which may read templates from the store) the claim's lease
// must still cover the send timeout and the record margin (leaseHolds): a step
// whose lease might run out first could be claimed and sent by another
// engine meanwhile, so it is released for the next claim instead, its try
// given back, and the returned delivery has no Status. A delivery that was
// not recorded leaves the step pending, put off by the re-delivery backoff
// (retryLater).
func (e *Engine) deliver(ctx context.Context, rec *VerificationRecord, code string, p PendingStep, now time.Time) (DeliveryRecord, int, error) {
	// Recording the delivery also completes the pending step.
	d, err := e.send(ctx, rec, code, p.Step, rec.ID+"-"+strconv.Itoa(p.Step), now, p.LeaseUntil)
	if err == errLeaseShort {
		e.log.LogAttrs(ctx, slog.LevelDebug, "verify: lease too short to send; released for the next claim",
			slog.String("verification", rec.ID), slog.Int("step", p.Step))
		_ = e.releaseStep(ctx, p, time.Time{}, false)
		return DeliveryRecord{}, 0, nil
	}
	if err != nil && d.Status == "" {
		// The store failed before the channel was called: nothing to
		// put off, the step is free again at once.
		_ = e.releaseStep(ctx, p, time.Time{}, false)
		return d, 0, err
	}
	if err != nil {
		e.retryLater(ctx, p)
		return d, 0, err
	}
	if d.Status != DeliveryFailed {
		return d, 1, nil
	}
	n, err := e.moveOn(ctx, rec.ID, code, p.Step, now)
	return d, 1 + n, err
}

// accepted reports whether a channel accepted the delivery.
func accepted(d DeliveryRecord) bool {
	return d.Status == DeliverySent || d.Status == DeliveryDelivered
}

// maxRedeliveryWait caps the re-delivery backoff.
const maxRedeliveryWait = time.Hour

// redeliveryWait is how long a step waits for its next try after its
// tries-th delivery could not be recorded: the lease, doubled for each
// earlier try, at most maxRedeliveryWait.
func (e *Engine) redeliveryWait(tries int) time.Duration {
	w := e.lease
	for i := 1; i < tries && w < maxRedeliveryWait; i++ {
		w *= 2
	}
	return min(w, maxRedeliveryWait)
}

// retryLater puts off a claimed step whose delivery could not be recorded,
// so that its next try (which sends it again, with the same Message.ID)
// waits for the backoff rather than one lease: the claim is kept until the
// backoff's end, so neither Run nor a repeated Send claims it sooner. That
// is a best effort, for the store may be refusing writes: if it fails, the
// step is claimed again when the lease runs out. Either way
// WithDeliveryTries bounds the tries.
func (e *Engine) retryLater(ctx context.Context, p PendingStep) {
	until := e.now().Add(e.redeliveryWait(p.Tries))
	if until.Before(p.LeaseUntil) {
		until = p.LeaseUntil
	}
	err := e.releaseStep(ctx, p, until, true)
	level, msg := slog.LevelWarn, "verify: delivery not recorded; the step is tried again later"
	if err != nil {
		level, msg = slog.LevelError, "verify: delivery not recorded; the step is tried again when its lease runs out"
	}
	attrs := []slog.Attr{slog.String("verification", p.VerificationID), slog.Int("step", p.Step),
		slog.Int("tries", p.Tries), slog.Int("max_tries", e.tries), slog.Time("next_try", until)}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	e.log.LogAttrs(ctx, level, msg, attrs...)
}

// releaseTimeout bounds releaseStep, which runs even when the caller's
// context is done.
const releaseTimeout = 5 * time.Second

// releaseStep hands back a claim this engine holds (see
// StepQueue.ReleaseStep): free at once for a zero until, else kept from
// every claim until then; sent false gives back the claim's try. It runs
// even if the caller gave up (a cancelled request must not leave the step
// held for a whole lease), bounded by releaseTimeout. A failure is logged
// and returned: the lease then runs out on its own.
func (e *Engine) releaseStep(ctx context.Context, p PendingStep, until time.Time, sent bool) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	_, err := e.store.ReleaseStep(rctx, p, until, sent)
	if err != nil {
		e.log.LogAttrs(ctx, slog.LevelWarn, "verify: releasing a step; it is free again when its lease runs out",
			slog.String("verification", p.VerificationID), slog.Int("step", p.Step),
			slog.Time("lease_until", p.LeaseUntil), slog.String("error", err.Error()))
	}
	return err
}

// givenUp begins the Error of a delivery the engine gave up on (giveUp).
const givenUp = "not sent again: "

// mayHaveArrived reports whether a delivery may have reached the recipient:
// a channel accepted it, or the engine gave up on it after tries whose
// outcome it could not record.
func mayHaveArrived(d DeliveryRecord) bool {
	return d.Status != DeliveryFailed || strings.HasPrefix(d.Error, givenUp)
}

// giveUp ends a step that was claimed more times than WithDeliveryTries
// allows without its delivery being recorded: it is not sent again. It is
// recorded as a failed delivery and the flow moves on to the next group as
// for any failed step; but since an earlier try may have reached the
// recipient, it does not end the verification as failed (it stays open
// until it is checked or expires). Where the store refuses even that
// record, the step is dropped (a later claim would give up again), and
// later groups follow at their own time.
func (e *Engine) giveUp(ctx context.Context, rec *VerificationRecord, p PendingStep, now time.Time) (int, error) {
	s := rec.Steps[p.Step]
	reason := fmt.Sprintf(givenUp+"the delivery could not be recorded in %d tries", e.tries)
	e.log.LogAttrs(ctx, slog.LevelError, "verify: giving up on a step",
		slog.String("verification", rec.ID), slog.Int("step", p.Step), slog.String("channel", s.Channel),
		slog.Int("tries", p.Tries-1), slog.String("reason", reason))
	e.emit(ctx, Event{Type: EventDeliveryFailed, VerificationID: rec.ID, FlowID: rec.FlowID, Channel: s.Channel,
		Step: p.Step, Time: now, Reason: reason})
	d := DeliveryRecord{ID: rec.ID + "-" + strconv.Itoa(p.Step), VerificationID: rec.ID, Step: p.Step,
		Channel: s.Channel, From: s.From, Status: DeliveryFailed, Error: reason, CreatedAt: now, UpdatedAt: now}
	if _, err := e.store.RecordDelivery(ctx, d); err != nil {
		if cerr := e.store.CompleteStep(ctx, rec.ID, p.Step); cerr != nil {
			return 0, storeErr(ctx, "give up on a step", errors.Join(err, cerr))
		}
		e.bookkeepingFailed(ctx, *rec, "record delivery", storeErr(ctx, "record delivery", err), now)
		return 0, nil
	}
	code, err := e.keys.unseal(rec.ID, rec.SealedCode)
	if err != nil {
		return 0, err
	}
	return e.moveOn(ctx, rec.ID, code, p.Step, now)
}

// moveOn is called after step failed. If every step of its group has
// failed, it claims the next group and delivers it now, shifting the later
// groups' due times to match; with no next group and no successful delivery
// at all, it ends the verification as failed.
func (e *Engine) moveOn(ctx context.Context, id, code string, step int, now time.Time) (int, error) {
	rec, err := e.store.GetVerification(ctx, id)
	if err != nil {
		return 0, storeErr(ctx, "get verification", err)
	}
	if !rec.Status.Open() {
		return 0, nil
	}
	start := groupStart(rec.Steps, step)
	end := groupEnd(rec.Steps, start)
	failed := make(map[int]bool, end-start)
	anyOK := false
	for _, d := range rec.Deliveries {
		if d.Status == DeliveryFailed {
			failed[d.Step] = true
		}
		if mayHaveArrived(d) {
			anyOK = true
		}
	}
	for i := start; i < end; i++ {
		if !failed[i] {
			return 0, nil // a companion is still on its way, or succeeded
		}
	}
	if end == len(rec.Steps) {
		if anyOK {
			return 0, nil
		}
		if _, ended, err := e.finish(ctx, id, StatusFailed, now); err != nil {
			return 0, err
		} else if ended {
			e.log.LogAttrs(ctx, slog.LevelWarn, "verify: every step failed", slog.String("verification", id))
		}
		return 0, nil
	}
	// The next group's lease starts now, on the clock: the failed sends
	// before it may have taken a while.
	at := e.now()
	claimed, err := e.store.Reschedule(ctx, at, schedule(id, rec.Steps, end, at, at.Add(e.lease)))
	if err != nil {
		return 0, storeErr(ctx, "reschedule steps", err)
	}
	sent := 0
	for _, p := range claimed {
		if p.LeaseUntil.After(at) { // the next group, now ours
			_, n, err := e.deliver(ctx, &rec, code, p, at)
			sent += n
			if err != nil {
				return sent, err
			}
		}
	}
	return sent, nil
}

// send renders and sends one message and records the delivery. step is -1
// for a Resend, which uses the first step's channel.
// errLeaseShort is what send returns, with a delivery that has no Status,
// when the claim's lease no longer covers a send (see deliver).
var errLeaseShort = errors.New("verify: the claim's lease is too short to send")

func (e *Engine) send(ctx context.Context, rec *VerificationRecord, code string, step int, msgID string, now, leaseUntil time.Time) (DeliveryRecord, error) {
	s := rec.Steps[max(step, 0)]
	d := DeliveryRecord{
		ID:             msgID,
		VerificationID: rec.ID,
		Step:           step,
		Channel:        s.Channel,
		From:           s.From,
		Status:         DeliverySent,
		CreatedAt:      now,
		UpdatedAt:      now,
	}
	var began time.Time
	if len(e.observers) > 0 {
		began = e.clock.Now()
	}
	receipt, err := e.sendMessage(ctx, rec, code, s, step, msgID, now, leaseUntil)
	if err == errLeaseShort {
		d.Status = ""
		return d, err
	}
	if sf, ok := err.(*storeFailure); ok { // sendMessage returns it unwrapped
		// The store failed before anything was sent: not a channel's
		// failure, so nothing is recorded, the delivery has no Status,
		// and the step is tried again.
		d.Status = ""
		return d, storeErr(ctx, sf.op, sf.err)
	}
	if err != nil {
		d.Status = DeliveryFailed
		// A channel's error text may echo the message: the code must not
		// reach the store, the event or the log in any form.
		d.Error = storable(scrubCode(err.Error(), rec.CodeLength, rec.Charset, func(c string) bool { return c == code }))
		e.log.LogAttrs(ctx, slog.LevelWarn, "verify: delivery failed",
			slog.String("verification", rec.ID), slog.Int("step", step),
			slog.String("channel", s.Channel), slog.String("error", d.Error))
	} else {
		d.ProviderID = storable(receipt.ProviderID)
		if receipt.Status == DeliveryDelivered {
			d.Status = DeliveryDelivered
		}
	}
	if len(e.observers) > 0 {
		ev := Event{Type: EventSent, VerificationID: rec.ID, FlowID: rec.FlowID, Channel: s.Channel, Step: step,
			Time: now, Latency: e.clock.Since(began)}
		if err != nil {
			ev.Type, ev.Reason = EventDeliveryFailed, d.Error
		}
		e.emit(ctx, ev)
	}
	if _, err := e.store.RecordDelivery(ctx, d); err != nil {
		return d, storeErr(ctx, "record delivery", err)
	}
	return d, nil
}

// storeFailure is a Store error met while preparing a message: unlike a
// channel's error, it does not fail the delivery.
type storeFailure struct {
	op  string
	err error
}

func (f *storeFailure) Error() string { return f.op + ": " + f.err.Error() }
func (f *storeFailure) Unwrap() error { return f.err }

// sendMessage renders the step's message and hands it to its channel. A
// Store failure while rendering is a *storeFailure. With a claim's
// leaseUntil (zero for a Resend, which holds none), the lease is checked
// last thing before the channel: errLeaseShort if it no longer holds.
func (e *Engine) sendMessage(ctx context.Context, rec *VerificationRecord, code string, s Step, step int, msgID string, now, leaseUntil time.Time) (Receipt, error) {
	ch, ok := e.channels[s.Channel]
	if !ok {
		return Receipt{}, fmt.Errorf("channel %q is not registered with this engine", s.Channel)
	}
	lang := rec.Language
	if s.Language != "" {
		lang = s.Language
	}
	if lang == "" {
		lang = rec.FallbackLanguage
	}
	var body, tplID string
	switch {
	case s.Text != "":
		body = s.Text
	case s.Template == "":
		body, lang = builtinText(lang, rec.Brand)
	default:
		t, err := e.sendTemplate(ctx, s.Template)
		if errors.Is(err, ErrNotFound) {
			return Receipt{}, fmt.Errorf("template %s: %w", s.Template, err)
		}
		if err != nil {
			return Receipt{}, &storeFailure{"get template", err}
		}
		if t.Status != TemplateApproved {
			return Receipt{}, fmt.Errorf("template %s is %s, not approved", t.ID, t.Status)
		}
		if t, err = e.pickTemplate(ctx, t, lang, rec.FallbackLanguage); err != nil {
			return Receipt{}, &storeFailure{"list templates", err}
		}
		body, lang, tplID = t.Body, t.Language, t.ID
	}
	body = render(body, code, minutesLeft(now, rec.ExpiresAt), rec.Brand)
	switch {
	case s.WebOTPDomain != "":
		body += "\n\n@" + s.WebOTPDomain + " #" + code
	case s.AppHash != "":
		body += "\n" + s.AppHash
	}
	m := Message{
		ID:             msgID,
		VerificationID: rec.ID,
		Channel:        s.Channel,
		Step:           step,
		To:             rec.To,
		From:           s.From,
		Code:           code,
		Body:           body,
		Template:       tplID,
		Language:       lang,
		ExpiresAt:      rec.ExpiresAt,
	}
	if !leaseUntil.IsZero() && !e.leaseHolds(leaseUntil) {
		return Receipt{}, errLeaseShort
	}
	// The timeout's timer is made only if the channel waits on its
	// context's Done (see lazydeadline): one that answers at once, as an
	// in-memory queue does, costs none.
	sctx, cancel := lazydeadline.WithTimeout(ctx, e.sendTimeout)
	defer cancel()
	return ch.Send(sctx, m)
}

// minutesLeft is the code's remaining validity in whole minutes, rounded up.
func minutesLeft(now, expires time.Time) int {
	d := expires.Sub(now)
	if d <= 0 {
		return 0
	}
	return int((d + time.Minute - 1) / time.Minute)
}

// render fills a template's placeholders in one pass.
func render(body, code string, minutes int, brand string) string {
	var b strings.Builder
	b.Grow(len(body) + len(code) + len(brand))
	for {
		i := strings.IndexByte(body, '{')
		if i < 0 {
			b.WriteString(body)
			return b.String()
		}
		b.WriteString(body[:i])
		body = body[i:]
		j := strings.IndexByte(body, '}')
		if j < 0 {
			b.WriteString(body)
			return b.String()
		}
		switch body[:j+1] {
		case "{code}", "{token}":
			b.WriteString(code)
		case "{minutes}":
			b.WriteString(strconv.Itoa(minutes))
		case "{brand}", "{app}":
			b.WriteString(brand)
		default:
			b.WriteString(body[:j+1])
		}
		body = body[j+1:]
	}
}

// ProcessDue delivers every pending step that is due now, on this engine's
// clock, and ends open verifications that have expired. It returns how many
// steps it sent (including steps that a failure brought forward).
//
// Steps are claimed in batches with a lease (WithLease) stamped from the
// clock at the time of each claim, and a batch holds no more steps than the
// engine can send within one lease (WithConcurrency of them at a time, each
// bounded by WithSendTimeout). Right before a step is handed to its channel
// the lease is checked again: a step whose lease might run out before the
// send timeout and the recording after it is left for the next claim
// instead of being sent. So while every engine lives, engines sharing a
// Store never send a step twice.
// Delivery is at least once only in two cases: a process that dies after a
// provider accepted a message but before the delivery was recorded, and a
// delivery the Store failed to record; either leaves the step to be claimed
// and sent again when the lease runs out. Such a re-delivery carries the
// same Message.ID (stable per verification and step), which providers and
// webhooks can use to drop the duplicate.
//
// Steps of verifications that are no longer open are dropped unsent. Tests
// call ProcessDue after moving a mock clock to drive fallback
// deterministically; servers call Run.
func (e *Engine) ProcessDue(ctx context.Context) (int, error) {
	now := e.now()
	for {
		ids, err := e.store.ExpireDue(ctx, now, e.batch)
		if err != nil {
			return 0, storeErr(ctx, "expire verifications", err)
		}
		for _, id := range ids {
			if len(e.observers) == 0 {
				break
			}
			ev := Event{Type: EventExpired, VerificationID: id, Time: now}
			if rec, err := e.store.GetVerification(ctx, id); err == nil {
				ev.FlowID = rec.FlowID
			}
			e.emit(ctx, ev)
		}
		if len(ids) < e.batch {
			break
		}
	}
	total := 0
	limit := e.claimLimit()
	for {
		// Each claim's lease starts at the claim, not at the start of the
		// call: an earlier batch may have taken most of a lease to send.
		at := e.now()
		steps, err := e.store.ClaimDue(ctx, at, at.Add(e.lease), limit)
		if err != nil {
			return total, storeErr(ctx, "claim due steps", err)
		}
		n, err := e.processSteps(ctx, steps)
		total += n
		if err != nil {
			return total, err
		}
		if len(steps) < limit {
			return total, nil
		}
	}
}

// claimLimit is how many steps one claim takes: no more than the engine
// can send within a lease, WithConcurrency at a time, each taking up to the
// send timeout plus the record margin (for reading the verification before
// and recording the delivery after), and no more than the batch size. So
// a step is left unsent for the lease (see leaseHolds) only when the store
// is slower than the record margin.
func (e *Engine) claimLimit() int {
	rounds := max(int(e.lease/(e.sendTimeout+e.recordMargin())), 1)
	return max(min(e.batch, e.concurrency*rounds), 1)
}

// recordMargin is the time a send leaves before its lease ends for the
// delivery to be recorded: a provider that answers at the very end of the
// send timeout must not let the lease run out before the step is done,
// or another engine could claim it and send it again. It is half of what
// the lease leaves after the send timeout, at most five seconds.
func (e *Engine) recordMargin() time.Duration {
	return min((e.lease-e.sendTimeout)/2, 5*time.Second)
}

// leaseHolds reports whether a send started now, bounded by the send
// timeout, and the recording after it end before the lease does.
func (e *Engine) leaseHolds(leaseUntil time.Time) bool {
	return e.now().Add(e.sendTimeout + e.recordMargin()).Before(leaseUntil)
}

// processSteps delivers claimed steps, up to e.concurrency at once.
func (e *Engine) processSteps(ctx context.Context, steps []PendingStep) (int, error) {
	var (
		mu    sync.Mutex
		total int
		errs  []error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, e.concurrency)
	)
	for _, p := range steps {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			n, err := e.processStep(ctx, p)
			mu.Lock()
			total += n
			if err != nil {
				errs = append(errs, err)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total, errors.Join(errs...)
}

func (e *Engine) processStep(ctx context.Context, p PendingStep) (int, error) {
	rec, err := e.store.GetVerification(ctx, p.VerificationID)
	if errors.Is(err, ErrNotFound) {
		return 0, storeErr(ctx, "complete step", e.store.CompleteStep(ctx, p.VerificationID, p.Step))
	}
	if err != nil {
		return 0, storeErr(ctx, "get verification", err)
	}
	now := e.now()
	if rec.Status.Open() && !now.Before(rec.ExpiresAt) {
		_, _, err := e.finish(ctx, rec.ID, StatusExpired, now)
		return 0, err
	}
	msgID := rec.ID + "-" + strconv.Itoa(p.Step)
	if !rec.Status.Open() || p.Step < 0 || p.Step >= len(rec.Steps) || hasDelivery(rec, msgID) {
		// Ended, malformed, or already sent by an engine that stopped
		// before completing the step: nothing to send.
		return 0, storeErr(ctx, "complete step", e.store.CompleteStep(ctx, p.VerificationID, p.Step))
	}
	if p.Tries > e.tries {
		return e.giveUp(ctx, &rec, p, now)
	}
	code, err := e.keys.unseal(rec.ID, rec.SealedCode)
	if err != nil {
		return 0, err
	}
	_, n, err := e.deliver(ctx, &rec, code, p, now)
	return n, err
}

func hasDelivery(rec VerificationRecord, id string) bool {
	for _, d := range rec.Deliveries {
		if d.ID == id {
			return true
		}
	}
	return false
}

// Run delivers fallback steps as they fall due until ctx is done: it calls
// ProcessDue, then sleeps on the engine's clock until the next step is due
// or the poll interval (WithPollInterval) has passed, whichever is first.
// Every 10 seconds it writes the refusal counts (FlushRefusals), and once an
// hour it calls Purge. Store and channel errors are logged and
// retried at the next wake-up, never returned; Run returns nil when ctx is
// done. With a mock clock, advancing the clock drives Run.
func (e *Engine) Run(ctx context.Context) error {
	var nextPurge time.Time
	for {
		_, err := e.ProcessDue(ctx)
		if err != nil && ctx.Err() == nil {
			e.log.LogAttrs(ctx, slog.LevelError, "verify: processing due steps", slog.String("error", err.Error()))
		}
		if err := e.flushRefusalsDue(ctx); err != nil && ctx.Err() == nil {
			e.log.LogAttrs(ctx, slog.LevelError, "verify: writing refusal counts", slog.String("error", err.Error()))
		}
		now := e.clock.Now()
		if !now.Before(nextPurge) {
			if _, err := e.Purge(ctx); err != nil && ctx.Err() == nil {
				e.log.LogAttrs(ctx, slog.LevelError, "verify: purging", slog.String("error", err.Error()))
			}
			nextPurge = now.Add(time.Hour)
		}
		wait := e.poll
		if next, ok, nerr := e.store.NextDue(ctx); err == nil && nerr == nil && ok {
			// After a failed pass, wait the full poll interval rather than
			// spinning on a step that is due but could not be sent.
			wait = min(wait, max(next.Sub(now), 0))
		}
		t := e.clock.Timer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Purge deletes verifications that ended longer ago than the retention
// period (WithRetention), with their deliveries, and returns how many. It
// also deletes the audit entries older than the retention period (when the
// store keeps them, AuditStore) and the protection counters that have
// expired (they count as zero already). Run calls it hourly.
func (e *Engine) Purge(ctx context.Context) (int, error) {
	now := e.now()
	before := now.Add(-e.retention)
	total := 0
	for {
		n, err := e.store.Purge(ctx, before, e.batch)
		total += n
		if err != nil {
			return total, storeErr(ctx, "purge", err)
		}
		if n < e.batch {
			break
		}
	}
	if err := e.purgeAudit(ctx, before); err != nil {
		return total, err
	}
	// Counters are small rows, many per verification: larger batches.
	counterBatch := 10 * e.batch
	for {
		n, err := e.counters.PurgeCounters(ctx, now, counterBatch)
		if err != nil {
			return total, storeErr(ctx, "purge counters", err)
		}
		if n < counterBatch {
			return total, nil
		}
	}
}
