package lazydeadline

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type key struct{}

// waitFor waits for ch to close, failing the test with msg after 10 s.
func waitFor(t *testing.T, ch <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal(msg)
	}
}

// made reports whether ctx has made its inner context (and so a timer).
func made(ctx context.Context) bool {
	c := ctx.(*lazyCtx)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner != nil
}

func TestNothingMadeUnlessWaitedOn(t *testing.T) {
	parent := context.WithValue(context.Background(), key{}, "v")
	ctx, cancel := WithTimeout(parent, time.Minute)
	if d, ok := ctx.Deadline(); !ok || time.Until(d) < 59*time.Second {
		t.Errorf("Deadline = %v, %v; want about a minute from now", d, ok)
	}
	if err := ctx.Err(); err != nil {
		t.Errorf("Err = %v before the deadline", err)
	}
	if v := ctx.Value(key{}); v != "v" {
		t.Errorf("Value = %v; want parent's", v)
	}
	if made(ctx) {
		t.Fatal("Deadline, Err and Value made a timer")
	}
	cancel()
	if made(ctx) {
		t.Fatal("cancel made a timer")
	}
	if err := ctx.Err(); err != context.Canceled {
		t.Errorf("Err after cancel = %v; want Canceled", err)
	}
	select {
	case <-ctx.Done():
	default:
		t.Error("Done after cancel is not closed")
	}
	if err := context.Cause(ctx); err != context.Canceled {
		t.Errorf("Cause after cancel = %v; want Canceled", err)
	}
	if v := ctx.Value(key{}); v != "v" {
		t.Errorf("Value after cancel = %v; want parent's", v)
	}
}

func TestDoneClosesAtTheDeadline(t *testing.T) {
	ctx, cancel := WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	waitFor(t, ctx.Done(), "Done not closed 10 s after a 20 ms timeout")
	if err := ctx.Err(); err != context.DeadlineExceeded {
		t.Errorf("Err = %v; want DeadlineExceeded", err)
	}
	if err := context.Cause(ctx); err != context.DeadlineExceeded {
		t.Errorf("Cause = %v; want DeadlineExceeded", err)
	}
	cancel()
	if err := ctx.Err(); err != context.DeadlineExceeded {
		t.Errorf("Err after cancel = %v; want DeadlineExceeded still", err)
	}
}

// TestPastDeadlineWithoutDone: a caller that only polls Err sees the
// deadline pass, and a Done asked for afterwards is closed.
func TestPastDeadlineWithoutDone(t *testing.T) {
	ctx, cancel := WithTimeout(context.Background(), time.Millisecond)
	time.Sleep(5 * time.Millisecond)
	if err := ctx.Err(); err != context.DeadlineExceeded {
		t.Fatalf("Err = %v; want DeadlineExceeded", err)
	}
	cancel() // after the deadline: the error stays DeadlineExceeded
	if err := ctx.Err(); err != context.DeadlineExceeded {
		t.Errorf("Err after cancel = %v; want DeadlineExceeded", err)
	}
	select {
	case <-ctx.Done():
	default:
		t.Error("Done is not closed past the deadline")
	}
	if err := ctx.Err(); err != context.DeadlineExceeded {
		t.Errorf("Err once made = %v; want DeadlineExceeded", err)
	}
}

func TestParentCancels(t *testing.T) {
	cause := errors.New("client went away")
	parent, stop := context.WithCancelCause(context.Background())
	ctx, cancel := WithTimeout(parent, time.Minute)
	defer cancel()
	stop(cause)
	if err := ctx.Err(); err != context.Canceled {
		t.Errorf("Err = %v; want Canceled", err)
	}
	if err := context.Cause(ctx); err != cause {
		t.Errorf("Cause = %v; want parent's cause", err)
	}
	select {
	case <-ctx.Done():
	default:
		t.Error("Done is not closed after parent's cancel")
	}

	// Waiting first, then parent's cancel.
	parent, stop = context.WithCancelCause(context.Background())
	ctx, cancel = WithTimeout(parent, time.Minute)
	defer cancel()
	done := ctx.Done()
	stop(cause)
	waitFor(t, done, "Done not closed after parent's cancel")
	if err := context.Cause(ctx); err != cause {
		t.Errorf("Cause = %v; want parent's cause", err)
	}
}

// TestCancelBeforeParent: once canceled, the context keeps Canceled when
// parent is canceled later, as context.WithTimeout's does.
func TestCancelBeforeParent(t *testing.T) {
	parent, stop := context.WithCancelCause(context.Background())
	ctx, cancel := WithTimeout(parent, time.Minute)
	cancel()
	stop(errors.New("later"))
	if err := context.Cause(ctx); err != context.Canceled {
		t.Errorf("Cause = %v; want Canceled", err)
	}
	<-ctx.Done()
	if err := ctx.Err(); err != context.Canceled {
		t.Errorf("Err = %v; want Canceled", err)
	}
}

func TestParentsEarlierDeadline(t *testing.T) {
	parent, stop := context.WithTimeout(context.Background(), time.Second)
	defer stop()
	pd, _ := parent.Deadline()
	ctx, cancel := WithTimeout(parent, time.Hour)
	defer cancel()
	if d, _ := ctx.Deadline(); !d.Equal(pd) {
		t.Errorf("Deadline = %v; want parent's %v", d, pd)
	}
}

// TestDerivedContexts: contexts made from this one are canceled with it
// at once, by the context package's own bookkeeping (no goroutine of its
// own, which would cancel them a moment later), and AfterFunc runs.
func TestDerivedContexts(t *testing.T) {
	ctx, cancel := WithTimeout(context.Background(), time.Minute)
	child, stopChild := context.WithCancel(ctx)
	defer stopChild()
	ran := make(chan struct{})
	context.AfterFunc(ctx, func() { close(ran) })
	cancel()
	if err := child.Err(); err != context.Canceled {
		t.Errorf("child's Err right after cancel = %v; want Canceled", err)
	}
	waitFor(t, ran, "AfterFunc did not run after cancel")

	ctx, cancel = WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	child, stopChild = context.WithCancel(ctx)
	defer stopChild()
	waitFor(t, child.Done(), "a derived context not done 10 s after a 20 ms timeout")
	if err := child.Err(); err != context.DeadlineExceeded {
		t.Errorf("child's Err = %v; want DeadlineExceeded", err)
	}
}

// TestConcurrentDone: callers asking at once get one channel.
func TestConcurrentDone(t *testing.T) {
	ctx, cancel := WithTimeout(context.Background(), time.Minute)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		got   [16]<-chan struct{}
	)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i] = ctx.Done()
			_ = ctx.Err()
		}()
	}
	close(start)
	wg.Wait()
	for _, d := range got[1:] {
		if d != got[0] {
			t.Fatal("Done returned different channels")
		}
	}
	cancel()
	<-got[0]
}

func BenchmarkWithTimeout(b *testing.B) {
	ctx := context.Background()
	b.Run("context", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, cancel := context.WithTimeout(ctx, time.Minute)
			cancel()
		}
	})
	b.Run("lazydeadline", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, cancel := WithTimeout(ctx, time.Minute)
			cancel()
		}
	})
}
