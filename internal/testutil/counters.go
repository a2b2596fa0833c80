package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/openverify/verify"
)

// SumCounters is the sum of the values of c's counters whose key starts
// with prefix and that have not expired at now.
func SumCounters(tb testing.TB, c verify.CounterLister, prefix string, now time.Time) int64 {
	tb.Helper()
	list, err := c.ListCounters(context.Background(), prefix, now, "", 1000)
	if err != nil {
		tb.Fatalf("list counters %q: %v", prefix, err)
	}
	var sum int64
	for _, n := range list {
		sum += n.Value
	}
	return sum
}

// OtherCode returns a code of the same shape as code that is not code:
// a wrong code for a test.
func OtherCode(code string) string {
	b := []byte(code)
	if b[0] == '9' {
		b[0] = '8'
	} else {
		b[0] = '9'
	}
	return string(b)
}
