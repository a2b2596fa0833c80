package verify

import (
	"context"
	"log/slog"
	"strings"
	"time"
)

// EventType names a verification's transition.
type EventType string

// Event types.
const (
	EventCreated        EventType = "created"
	EventSent           EventType = "sent"
	EventDeliveryFailed EventType = "delivery_failed"
	EventDelivered      EventType = "delivered"
	EventCheckFailed    EventType = "check_failed"
	EventVerified       EventType = "verified"
	EventExpired        EventType = "expired"
	EventCanceled       EventType = "canceled"
	EventMaxAttempts    EventType = "max_attempts"
	EventFailed         EventType = "failed"
	EventBlocked        EventType = "blocked"
	EventRateLimited    EventType = "rate_limited"
	// EventBookkeepingFailed reports that a counter or record kept after a
	// done thing (a verified code, a delivered message) could not be
	// written; Reason names the operation. The caller was answered as if
	// it had been written.
	EventBookkeepingFailed EventType = "bookkeeping_failed"
)

// Event is one transition, as an Observer sees it. It never contains the
// code, nor the recipient.
type Event struct {
	Type           EventType `json:"type"`
	VerificationID string    `json:"verification_id,omitempty"`
	FlowID         string    `json:"flow_id,omitempty"`
	// Channel and Step are set on delivery events; Step is -1 for a Resend.
	Channel string    `json:"channel,omitempty"`
	Step    int       `json:"step"`
	Time    time.Time `json:"time"`
	// ErrorCode is the E-code of a refusal (check_failed, blocked,
	// rate_limited, failed).
	ErrorCode string `json:"error_code,omitempty"`
	// Reason explains blocked and rate_limited events and delivery
	// failures.
	Reason string `json:"reason,omitempty"`
	// Latency is, on sent and delivery_failed, how long the channel took;
	// on verified, the time from creation to verification.
	Latency time.Duration `json:"latency,omitempty"`
}

// Observer receives the engine's events. Observe is called synchronously
// on the path of Send, Check and ProcessDue, so it must return quickly and
// must not call back into the engine: forward to a buffered channel, a
// metrics counter or a queue (see metrics.New for one that only counts). It must be safe for
// concurrent use.
type Observer interface {
	Observe(ctx context.Context, ev Event)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(ctx context.Context, ev Event)

// Observe implements Observer.
func (f ObserverFunc) Observe(ctx context.Context, ev Event) { f(ctx, ev) }

// WithObserver adds an Observer; several may be added.
func WithObserver(o Observer) Option {
	return func(c *config) error {
		if o != nil {
			c.observers = append(c.observers, o)
		}
		return nil
	}
}

func (e *Engine) emit(ctx context.Context, ev Event) {
	for _, o := range e.observers {
		o.Observe(ctx, ev)
	}
}

var endEvents = map[Status]EventType{
	StatusVerified:    EventVerified,
	StatusExpired:     EventExpired,
	StatusCanceled:    EventCanceled,
	StatusMaxAttempts: EventMaxAttempts,
	StatusFailed:      EventFailed,
}

// finish ends a verification through the Store and emits its event.
func (e *Engine) finish(ctx context.Context, id string, status Status, now time.Time) (VerificationRecord, bool, error) {
	rec, ended, err := e.store.Finish(ctx, id, status, now)
	if err != nil {
		return rec, ended, storeErr(ctx, "finish verification", err)
	}
	if ended {
		e.emitEnded(ctx, rec, now)
	}
	return rec, ended, nil
}

// bookkeepingFailed logs and emits a failure of the bookkeeping after a
// done thing (a verified code, a delivered message): the caller's answer
// stands.
func (e *Engine) bookkeepingFailed(ctx context.Context, rec VerificationRecord, op string, err error, now time.Time) {
	e.log.LogAttrs(ctx, slog.LevelWarn, "verify: bookkeeping failed", slog.String("verification", rec.ID),
		slog.String("op", op), slog.String("error", err.Error()))
	e.emit(ctx, Event{Type: EventBookkeepingFailed, VerificationID: rec.ID, FlowID: rec.FlowID, Time: now,
		ErrorCode: ErrInternal.Code, Reason: op})
}

// emitEnded emits the event for a verification that has just ended.
func (e *Engine) emitEnded(ctx context.Context, rec VerificationRecord, now time.Time) {
	if len(e.observers) == 0 {
		return
	}
	ev := Event{Type: endEvents[rec.Status], VerificationID: rec.ID, FlowID: rec.FlowID, Time: now}
	switch rec.Status {
	case StatusVerified:
		ev.Latency = now.Sub(rec.CreatedAt)
	case StatusFailed:
		ev.ErrorCode = ErrDeliveryFailed.Code
	}
	e.emit(ctx, ev)
}

// logging helpers, to keep call sites short.
const warnLevel = slog.LevelWarn

func logStr(k, v string) slog.Attr       { return slog.String(k, v) }
func logInt(k string, v int64) slog.Attr { return slog.Int64(k, v) }
func trimSpace(s string) string          { return strings.TrimSpace(s) }
