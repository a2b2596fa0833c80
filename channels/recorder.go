package channels

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/openverify/verify"
)

// Recorder is a Channel for tests: it keeps every message it accepts, and
// can be told to fail its next sends to exercise fallback. It is safe for
// concurrent use.
//
//	sms := channels.NewRecorder("sms")
//	eng, _ := verify.New(memstore.New(), verify.WithChannels(sms))
//	...
//	m, _ := sms.Last()
//	eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
type Recorder struct {
	name       string
	addressing verify.Addressing

	mu       sync.Mutex
	msgs     []verify.Message
	calls    int
	failNext int
	failErr  error
}

var (
	_ verify.Channel   = (*Recorder)(nil)
	_ verify.Addresser = (*Recorder)(nil)
)

// ErrRecorderFailure is what a Recorder returns for a failed send when
// FailNext was given no error of its own.
var ErrRecorderFailure = errors.New("channels: recorder: send failed on purpose")

// NewRecorder returns a Recorder with the given channel name. A name that
// contains "mail" ("email", "mail", "email-backup") makes it a
// verify.ByEmail channel; any other name a verify.ByPhone channel. Use
// SetAddressing to choose otherwise.
func NewRecorder(name string) *Recorder {
	return &Recorder{name: name, addressing: addressingByName(name)}
}

func addressingByName(name string) verify.Addressing {
	if strings.Contains(strings.ToLower(name), "mail") {
		return verify.ByEmail
	}
	return verify.ByPhone
}

// Name implements verify.Channel.
func (r *Recorder) Name() string { return r.name }

// Addressing implements verify.Addresser.
func (r *Recorder) Addressing() verify.Addressing { return r.addressing }

// SetAddressing sets which part of the Recipient the channel uses, and
// returns r. Call it before handing r to verify.New.
func (r *Recorder) SetAddressing(a verify.Addressing) *Recorder {
	r.addressing = a
	return r
}

// Send implements verify.Channel: it records m, or fails if FailNext asked
// it to.
func (r *Recorder) Send(ctx context.Context, m verify.Message) (verify.Receipt, error) {
	if err := ctx.Err(); err != nil {
		return verify.Receipt{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.failNext > 0 {
		r.failNext--
		if r.failErr != nil {
			return verify.Receipt{}, r.failErr
		}
		return verify.Receipt{}, ErrRecorderFailure
	}
	r.msgs = append(r.msgs, m)
	return verify.Receipt{ProviderID: r.name + "-" + strconv.Itoa(len(r.msgs))}, nil
}

// FailNext makes the next n sends fail with err (ErrRecorderFailure if err
// is nil). Failed sends are not recorded.
func (r *Recorder) FailNext(n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failNext, r.failErr = n, err
}

// Messages returns a copy of the messages accepted so far, oldest first.
func (r *Recorder) Messages() []verify.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]verify.Message(nil), r.msgs...)
}

// Last returns the most recent accepted message, and false if there is none.
func (r *Recorder) Last() (verify.Message, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) == 0 {
		return verify.Message{}, false
	}
	return r.msgs[len(r.msgs)-1], true
}

// Len returns how many messages were accepted.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// Calls returns how many times Send was called, failed sends included.
func (r *Recorder) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// Reset forgets every message and pending failure.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs, r.calls, r.failNext, r.failErr = nil, 0, 0, nil
}
