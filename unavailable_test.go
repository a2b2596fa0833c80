package verify_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/openverify/verify"
)

// selfMarked is a backend error that says itself whether a retry helps.
type selfMarked bool

func (m selfMarked) Error() string   { return "backend says so" }
func (m selfMarked) Transient() bool { return bool(m) }

// TestIsTransient: the classification behind E926, rule by rule.
func TestIsTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("anything else"), false},
		{selfMarked(true), true},
		{fmt.Errorf("wrapped: %w", selfMarked(true)), true},
		{selfMarked(false), false},
		{verify.Transient(errors.New("throttled"), 0), true},
		{context.DeadlineExceeded, true},
		{context.Canceled, false},
		{verify.ErrUnavailable, true},
		{verify.ErrInternal, false},
		{verify.ErrInvalidOTP, false},
		{&sqlStateError{"57P01", ""}, true},
		{&sqlStateError{"57P02", ""}, true},
		{&sqlStateError{"57P03", ""}, true},
		{&sqlStateError{"57014", ""}, true},
		{&sqlStateError{"25006", ""}, true},
		{&sqlStateError{"40001", ""}, true},
		{&sqlStateError{"40P01", ""}, true},
		{&sqlStateError{"55P03", ""}, true},
		{&sqlStateError{"08006", ""}, true},
		{&sqlStateError{"08001", ""}, true},
		{&sqlStateError{"53100", ""}, true},
		{&sqlStateError{"53300", ""}, true},
		{&sqlStateError{"42501", ""}, false},
		{&sqlStateError{"42P01", ""}, false},
		{&sqlStateError{"23505", ""}, false},
	} {
		assert.Equal(t, c.want, verify.IsTransient(c.err), "%T %v", c.err, c.err)
	}
	assert.NoError(t, verify.Transient(nil, time.Second), "Transient(nil) is nil")
	var ve *verify.Error
	err := verify.Transient(errors.New("x"), -time.Second)
	assert.True(t, verify.IsTransient(err))
	assert.False(t, errors.As(err, &ve), "a mark is not yet an E926: the engine makes it one")
}
