package verify

import (
	"context"
	"time"
)

// Store keeps flows, templates, verifications, their deliveries and their
// pending fallback steps, and the counters behind abuse protection. The
// engine holds no state of its own, so several engines (in one process or
// many) that share a Store and a secret behave as one.
//
// A Store is the union of four capabilities, each a small interface that
// can be built and tested on its own (storetest has a part for each):
// Catalog (flows and templates), Verifications (verifications and their
// deliveries), StepQueue (the pending fallback steps) and Counters. The
// steps of a verification live with it: CreateVerification, Finish and
// RecordDelivery change both in one atomic step, so Verifications and
// StepQueue are one backend. Counters may come from another backend (see
// WithCounters).
//
// Every method takes the engine's clock reading as now where time matters; a
// Store never reads the wall clock. A Store must be safe for concurrent use,
// and the operations documented as atomic must stay atomic across every
// process that shares the Store.
//
// Errors: a record that does not exist is reported as an error for which
// errors.Is(err, ErrNotFound) holds. Every other error is a system error
// (a lost connection, a cancelled context) and is passed to the caller.
// A Store must not keep the slices it is handed (CodeHash, Steps,
// AllowedIPs, a Flow's country lists, ...): it copies what it keeps. It may
// share the slices it returns between callers, who must not modify them.
//
// The conformance suite in package storetest checks every sentence of this
// contract; run it against any new implementation.
type Store interface {
	Catalog
	Verifications
	StepQueue
	Counters
}

// Catalog keeps flows and templates.
type Catalog interface {
	// CreateFlow stores a new flow. If f.Default is set, every other flow
	// loses its Default flag in the same atomic step, so at most one flow is
	// the default.
	CreateFlow(ctx context.Context, f Flow) error
	// UpdateFlow replaces the flow with f.ID (ErrNotFound if there is none),
	// with the same Default rule as CreateFlow.
	UpdateFlow(ctx context.Context, f Flow) error
	// DeleteFlow removes the flow (ErrNotFound if there is none).
	// Verifications already started from it are not affected.
	DeleteFlow(ctx context.Context, id string) error
	// GetFlow returns the flow with the given ID, or ErrNotFound.
	GetFlow(ctx context.Context, id string) (Flow, error)
	// DefaultFlow returns the flow whose Default flag is set, or ErrNotFound.
	DefaultFlow(ctx context.Context) (Flow, error)
	// ListFlows returns every flow, oldest CreatedAt first (ties by ID).
	ListFlows(ctx context.Context) ([]Flow, error)

	// CreateTemplate stores a new template.
	CreateTemplate(ctx context.Context, t Template) error
	// SetTemplateStatus sets a template's status and reason, or returns
	// ErrNotFound.
	SetTemplateStatus(ctx context.Context, id string, status TemplateStatus, reason string) error
	// GetTemplate returns the template with the given ID, or ErrNotFound.
	GetTemplate(ctx context.Context, id string) (Template, error)
	// ListTemplates returns every template, oldest CreatedAt first (ties by ID).
	ListTemplates(ctx context.Context) ([]Template, error)
}

// Verifications keeps verifications and their deliveries. Each decision
// that protects a verification (an attempt, a send, its end) is one atomic
// method that decides and counts together.
type Verifications interface {
	// CreateVerification stores a new verification and its pending steps in
	// one atomic step: after a crash either both exist or neither does. If
	// v.IdempotencyKey is not empty and another verification already has it,
	// nothing is stored and the error matches ErrDuplicate; of many racing
	// calls with one key exactly one succeeds. If v.Exclusive is set and an
	// exclusive verification with the same FlowID and To (both Phone and
	// Email) is open, whatever its ExpiresAt, nothing is stored and the
	// error matches ErrOpenExists; of many racing calls for one flow and
	// recipient at most one succeeds. When both apply, either error may be
	// returned.
	CreateVerification(ctx context.Context, v VerificationRecord, steps []PendingStep) error
	// GetVerification returns the verification with its deliveries (oldest
	// first), or ErrNotFound. Ended verifications are returned until Purge
	// removes them.
	GetVerification(ctx context.Context, id string) (VerificationRecord, error)
	// Attempt counts one check attempt and compares the code, in one atomic
	// step. If the verification is open (Status.Open), has Attempts <
	// MaxAttempts and now is before ExpiresAt, it increments Attempts and
	// then ends the verification as Finish does: as verified when CodeHash
	// equals one of hashes (the code's HMAC under each configured secret),
	// or else as max_attempts when Attempts has reached MaxAttempts; it
	// returns the updated record with counted = true. A counted attempt
	// also appends CheckAttempt{At: now, Right: whether it verified} to
	// Checks, in the same step. Otherwise it changes nothing and returns
	// the current record with counted = false. However
	// many callers race, at most MaxAttempts attempts are ever counted and
	// at most one of them verifies. Unknown ID: ErrNotFound.
	//
	// The hashes are keyed HMACs, so comparing them needs no constant-time
	// care: how long a comparison takes says nothing about the code.
	Attempt(ctx context.Context, id string, hashes [][]byte, now time.Time) (v VerificationRecord, counted bool, err error)
	// CountSend counts one more send of the code (a Resend, or a Send that
	// reuses the verification), deciding and counting in one atomic step:
	// if the verification is open, now is before ExpiresAt, Sends < max
	// and, when cooldown > 0, LastSentAt is zero or at least cooldown
	// before now, it increments Sends, sets LastSentAt to now and returns
	// the updated record with counted = true. Otherwise it changes nothing
	// and returns the current record with counted = false, from which the
	// caller tells why (ended, expired, Sends at max, or LastSentAt too
	// recent). However many callers race, at most one is counted per
	// cooldown and at most max sends are ever counted. Unknown ID:
	// ErrNotFound.
	CountSend(ctx context.Context, id string, max int, cooldown time.Duration, now time.Time) (v VerificationRecord, counted bool, err error)
	// Finish ends an open verification with the given ended status
	// (verified, expired, canceled, max_attempts or failed), atomically: it
	// sets Status, EndedAt = now (and VerifiedAt = now for verified), erases
	// SealedCode and deletes the verification's pending steps. It returns the
	// record and ended = true when this call ended it; when the verification
	// had already ended it changes nothing and returns the current record
	// with ended = false, so that of many racing callers exactly one ends it.
	// A status that is not an ended one (pending, sent, delivered, or not a
	// Status at all) is refused with an error, and nothing changes.
	// Unknown ID: ErrNotFound.
	Finish(ctx context.Context, id string, status Status, now time.Time) (v VerificationRecord, ended bool, err error)
	// RecordDelivery inserts the delivery or, when one with d.ID exists,
	// moves it forward, deciding in one atomic step: a delivery's Status
	// moves only from sent to delivered or failed, and from failed to
	// delivered (the recipient has the code after all). Anything else (the
	// same status again, a late sent after failed or delivered, failed
	// after delivered) changes nothing. A move takes Status, Error,
	// UpdatedAt and, when not empty, ProviderID from d; the other fields
	// stay. It reports whether it inserted or moved the delivery. When it
	// did, the status is sent or delivered and the verification is still
	// open, the verification's status moves forward to it (pending → sent →
	// delivered; never backwards). When d.Step >= 0 the pending step
	// (VerificationID, Step), if any, is deleted either way: a step with a
	// recorded delivery is done. All of this is one atomic step. Unknown
	// verification: ErrNotFound.
	RecordDelivery(ctx context.Context, d DeliveryRecord) (changed bool, err error)
	// ExpireDue ends, as Finish(expired) does, up to limit open
	// verifications whose ExpiresAt is at or before now, and returns their
	// IDs.
	ExpireDue(ctx context.Context, now time.Time, limit int) ([]string, error)
	// Purge deletes up to limit ended verifications whose EndedAt is before
	// before, with their deliveries, and returns how many it deleted. Open
	// verifications are never purged.
	Purge(ctx context.Context, before time.Time, limit int) (int, error)

	// FindByIdempotencyKey returns the verification created with the given
	// non-empty IdempotencyKey, or ErrNotFound.
	FindByIdempotencyKey(ctx context.Context, key string) (VerificationRecord, error)
	// FindOpen returns the open verifications of a flow whose recipient
	// equals to (both Phone and Email) and whose ExpiresAt is after now,
	// newest first. With the zero now it returns every open one.
	FindOpen(ctx context.Context, flowID string, to Recipient, now time.Time) ([]VerificationRecord, error)
}

// StepQueue keeps the pending fallback steps that CreateVerification
// stores, so fallback survives restarts and each step is sent once across
// instances.
type StepQueue interface {
	// ClaimDue claims up to limit pending steps that are due (DueAt <= now)
	// and not leased (LeaseUntil <= now), earliest first, by setting
	// their LeaseUntil to leaseUntil and adding one to their Tries, and
	// returns them as updated, each at most once.
	// Claiming is atomic: however many callers race, a step is handed to
	// one caller per lease; once the lease runs out without CompleteStep,
	// the step can be claimed again.
	ClaimDue(ctx context.Context, now, leaseUntil time.Time, limit int) ([]PendingStep, error)
	// Reschedule sets DueAt and LeaseUntil of each given pending step,
	// matched by (VerificationID, Step), that still exists and is not leased
	// at now (its LeaseUntil is at or before now), and returns the steps it
	// updated. Each step is updated atomically, so a step that another caller
	// has claimed is left alone; giving a LeaseUntil after now claims it,
	// and a claim adds one to the step's Tries (the given Tries is ignored;
	// the returned steps carry the stored count). (A caller that holds a
	// claim could release it by passing its own LeaseUntil as now;
	// ReleaseStep does that directly, and can give the try back.)
	Reschedule(ctx context.Context, now time.Time, steps []PendingStep) ([]PendingStep, error)
	// ReleaseStep ends a claim early: if the pending step
	// (p.VerificationID, p.Step) exists and is leased until exactly
	// p.LeaseUntil (the caller's claim still holds), it sets its
	// LeaseUntil to until (a zero or past until frees it at once; a later
	// one keeps it from every claim until then) and, when sent is false
	// (the caller did not hand the step to a channel), takes back the try
	// its claim counted (Tries never goes below zero). It reports whether
	// it changed the step. DueAt stays. Atomic, like every claim.
	ReleaseStep(ctx context.Context, p PendingStep, until time.Time, sent bool) (bool, error)
	// CompleteStep deletes a pending step. A step that no longer exists is
	// not an error.
	CompleteStep(ctx context.Context, verificationID string, step int) error
	// NextDue returns the earliest time at which a pending step will be
	// claimable (the later of its DueAt and LeaseUntil), and ok = false if
	// there are no pending steps.
	NextDue(ctx context.Context) (t time.Time, ok bool, err error)
}

// Counters keeps named counters with an expiry: the rate limits, failure
// lockouts and delays, and number-prefix blocks that every engine on the
// backend shares. Every protection decides and counts in one Take, so
// however many callers race, no limit is exceeded.
type Counters interface {
	// Take applies the takes, all or nothing, in one atomic step. Each take
	// names a distinct counter. A counter that does not exist, or whose
	// ExpiresAt is at or before now, counts as the zero Counter. A take
	// with a negative Delta (a refund) is always allowed; any other take,
	// a check of Delta 0 too, is allowed when the counter's Value + Delta
	// is at most Max and now is not before the counter's NotBefore. A
	// refused take's RetryAfter is the time until NotBefore, or until
	// ExpiresAt when the value is too high, whichever is later, and never
	// past ExpiresAt. If every take is allowed, each take with a non-zero
	// Delta changes its counter as Take.Apply describes, and the result
	// has OK set and the counters after the change. If any take is
	// refused, no counter changes, and the result names the first refused
	// take and the counters as they are. Applying the decision is the
	// Store's job: ApplyTakes computes it from the counters read under the
	// Store's lock, so a Store written in Go need only lock, read, call it
	// and write.
	Take(ctx context.Context, now time.Time, takes []Take) (Taken, error)
	// GetCounter returns the counter named key, or the zero Counter if it
	// does not exist or has expired at now.
	GetCounter(ctx context.Context, key string, now time.Time) (Counter, error)
	// DeleteCounter deletes a counter; deleting a missing one is not an
	// error.
	DeleteCounter(ctx context.Context, key string) error
	// PurgeCounters deletes up to limit counters whose ExpiresAt is before
	// before, and returns how many it deleted.
	PurgeCounters(ctx context.Context, before time.Time, limit int) (int, error)
}

// VerificationRecord is what a Store keeps for one verification. It never
// holds the plain code: CodeHash is an HMAC of it and SealedCode an
// authenticated encryption of it, kept only while a delivery can still happen.
type VerificationRecord struct {
	ID        string
	FlowID    string
	ForeignID string
	Status    Status
	To        Recipient
	IPAddress string
	// IdempotencyKey is the SendRequest's key, unique among verifications
	// when not empty; RequestHash identifies the request's payload, so a
	// repeat with the same key but another payload can be refused.
	IdempotencyKey string
	RequestHash    []byte
	// Exclusive is set for a verification of a flow whose Duplicates
	// policy is reuse or replace: of the exclusive verifications with the
	// same FlowID and To, at most one is open at a time (see
	// CreateVerification).
	Exclusive bool
	// Brand is the flow's Brand, for rendering messages.
	Brand string
	// Language is the language messages are rendered in (BCP 47), and
	// FallbackLanguage the flow's Language, used when no template exists
	// in Language.
	Language         string
	FallbackLanguage string

	// CodeHash is HMAC-SHA256(secret, verification ID, code).
	CodeHash []byte
	// SealedCode is the AES-GCM-sealed code; nil once the verification ends.
	SealedCode []byte
	// Charset and CodeLength describe the code, for checking input.
	Charset    Charset
	CodeLength int

	Attempts    int
	MaxAttempts int
	// Checks are the attempts Attempt counted, oldest first: one per
	// Attempts (fewer for a record stored before the Store kept them).
	// CreateVerification ignores them: a new verification has none.
	Checks []CheckAttempt
	// Sends counts Send and Resend deliveries of the code, and LastSentAt
	// is when the latest of them was counted (CreatedAt for the first).
	Sends      int
	LastSentAt time.Time
	// Steps is the flow's steps as they were when the verification started,
	// so that editing or deleting the flow does not change its fallback.
	Steps []Step
	// AllowedIPs is the flow's IP allow-list as it was at the start, for
	// Check.
	AllowedIPs []string

	CreatedAt  time.Time
	ExpiresAt  time.Time
	VerifiedAt time.Time
	// EndedAt is when the verification left the open states; zero while open
	// (CreateVerification ignores it for an open verification).
	EndedAt time.Time

	// Deliveries are filled in by the Store on every record it returns,
	// oldest first; they are ignored by CreateVerification.
	Deliveries []DeliveryRecord
}

// CheckAttempt is one check of a code that the Store counted: when, and
// whether the code was right.
type CheckAttempt struct {
	At    time.Time `json:"at"`
	Right bool      `json:"right"`
}

// DeliveryRecord is one attempt to deliver the code on one channel.
type DeliveryRecord struct {
	// ID is the message ID, stable per (verification, step) and per resend,
	// and unique among all verifications (the engine derives it from the
	// verification ID).
	ID             string
	VerificationID string
	// Step is the index of the flow step; -1 for a Resend.
	Step       int
	Channel    string
	From       string
	Status     DeliveryStatus
	ProviderID string
	// Error is the failure's text (never containing the code); "" on success.
	Error     string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// PendingStep is one flow step still to be delivered, kept in the Store so
// fallback survives restarts and is sent once across instances.
type PendingStep struct {
	VerificationID string
	// Step is the index into the verification's Steps.
	Step  int
	DueAt time.Time
	// LeaseUntil is the end of the current claim; zero or past means free.
	LeaseUntil time.Time
	// Tries counts the claims of the step, the first included: each may
	// have handed it to a channel without the delivery being recorded.
	// CreateVerification stores it as given; ClaimDue, and Reschedule when
	// it claims, add one; ReleaseStep takes one back for a claim that sent
	// nothing. It bounds re-delivery (see WithDeliveryTries).
	Tries int
}
