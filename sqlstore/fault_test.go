package sqlstore_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// TestDatabaseGoesAway takes the database away in the middle of a run —
// on SQLite by closing the *sql.DB under the engine, on PostgreSQL by
// cutting every connection at a TCP proxy and refusing new ones — and
// checks that calls then fail with system errors (no panic, no silent
// success, no attempt counted), and that once the database is back a new
// pool carries the same verifications on: the fallback goes out with the
// same code, and the code verifies.
func TestDatabaseGoesAway(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		dsn := backends[0].newDSN(t)
		testDatabaseGoesAway(t, dsn, func(a instance) { require.NoError(t, a.store.Close()) }, func() {}, false)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := freshSchema(t)
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		p := startProxy(t, u.Host)
		u.Host = p.addr
		testDatabaseGoesAway(t, u.String(), func(instance) { p.cut() }, func() { p.restore(t) }, true)
	})
}

func testDatabaseGoesAway(t *testing.T, dsn string, takeAway func(instance), bringBack func(), oldPoolRecovers bool) {
	ctx := context.Background()
	clk := newClock()
	sms, email := newRecorder("sms", false), newRecorder("email", true)
	a := newInstance(t, dsn, clk, sms, email)
	_, err := a.eng.CreateFlow(ctx, fallbackFlow)
	require.NoError(t, err)
	v1, err := a.eng.Send(ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	_, err = a.eng.Check(ctx, verify.CheckRequest{VerifyID: v1.ID, Code: "000000"})
	require.ErrorIs(t, err, verify.ErrInvalidOTP)
	code := sms.sent(v1.ID)[0].Code

	// Workers hammer the engine; the database goes away under them.
	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		ok, fail atomic.Int32
		gone     atomic.Bool
		failed   = make(chan struct{}, 4)
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				switch w {
				case 0:
					_, err = a.eng.Send(ctx, verify.SendRequest{To: someone()})
				case 1:
					_, err = a.eng.Get(ctx, v1.ID)
				case 2:
					_, err = a.eng.ProcessDue(ctx)
				case 3:
					_, err = a.eng.Resend(ctx, v1.ID)
				}
				if err == nil || !storeFailure(err) {
					// Answered (a refusal such as a resend limit is an answer).
					ok.Add(1)
					continue
				}
				fail.Add(1)
				if gone.Load() {
					select {
					case failed <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	for ok.Load() < 20 {
		time.Sleep(time.Millisecond)
	}
	gone.Store(true)
	takeAway(a)
	<-failed
	<-failed
	close(stop)
	wg.Wait()
	t.Logf("before and around the outage: %d calls succeeded, %d failed", ok.Load(), fail.Load())

	// While the database is away every call fails with a typed store
	// failure: E926 where a retry can fix it (a refused connection), E925
	// where it cannot (a closed pool).
	isSystemErr := func(err error, what string) {
		t.Helper()
		require.Error(t, err, "%s while the database is away", what)
		assert.True(t, storeFailure(err), "%s: want E925 or E926, not %v", what, err)
		if oldPoolRecovers {
			assert.ErrorIs(t, err, verify.ErrUnavailable, "%s: a refused connection is worth a retry", what)
		}
	}
	_, err = a.eng.Check(ctx, verify.CheckRequest{VerifyID: v1.ID, Code: code})
	isSystemErr(err, "Check")
	_, err = a.eng.Check(ctx, verify.CheckRequest{VerifyID: v1.ID, Code: "000000"})
	isSystemErr(err, "Check")
	_, err = a.eng.Send(ctx, verify.SendRequest{To: someone()})
	isSystemErr(err, "Send")
	_, err = a.eng.Get(ctx, v1.ID)
	isSystemErr(err, "Get")
	_, err = a.eng.ProcessDue(ctx)
	isSystemErr(err, "ProcessDue")

	// The database comes back; a new pool (a restarted instance) goes on.
	bringBack()
	b := newInstance(t, dsn, clk, sms, email)
	got, err := b.eng.Get(ctx, v1.ID)
	require.NoError(t, err)
	assert.True(t, got.Status.Open(), "v1 is still open, got %s", got.Status)
	assert.Equal(t, 1, got.Attempts, "checks that failed during the outage counted no attempt")

	clk.Add(30 * time.Second)
	_, err = b.eng.ProcessDue(ctx)
	require.NoError(t, err)
	emails := email.sent(v1.ID)
	require.Len(t, emails, 1, "the fallback is sent once after the outage")
	assert.Equal(t, code, emails[0].Code, "with the same code")
	got, err = b.eng.Check(ctx, verify.CheckRequest{VerifyID: v1.ID, Code: code})
	require.NoError(t, err)
	assert.Equal(t, verify.StatusVerified, got.Status)
	assert.Equal(t, 2, got.Attempts)

	if oldPoolRecovers {
		// The old pool drops its dead connections as it meets them (each
		// such call fails) and then works again.
		var err error
		for range 20 {
			if got, err = a.eng.Get(ctx, v1.ID); err == nil {
				break
			}
		}
		require.NoError(t, err, "the old pool works again once the database is back")
		assert.Equal(t, verify.StatusVerified, got.Status)
	}
}

// proxy forwards TCP connections to a database, and can cut them all and
// refuse new ones, as a database that goes away does.
type proxy struct {
	target, addr string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{target: target, addr: ln.Addr().String(), ln: ln, conns: make(map[net.Conn]bool)}
	go p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, up) {
			return
		}
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// track records a connection pair, or closes it if the proxy was cut
// meanwhile.
func (p *proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = true
	}
	return true
}

func (p *proxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cut closes the listener and every connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// restore listens again on the same address.
func (p *proxy) restore(t *testing.T) {
	ln, err := net.Listen("tcp", p.addr)
	require.NoError(t, err)
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go p.serve(ln)
}

// storeFailure reports whether err is the engine's answer to a store that
// failed: E925 or E926, never a refusal.
func storeFailure(err error) bool {
	return errors.Is(err, verify.ErrUnavailable) || errors.Is(err, verify.ErrInternal)
}
