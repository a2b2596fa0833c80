package faults

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
)

// threeSteps sends an SMS, an email a second later and a voice call a
// second after that, so that Run always has work.
var threeSteps = verify.Flow{Name: "login", Default: true, Steps: []verify.Step{
	{Channel: "sms"},
	{Channel: "email", After: time.Second},
	{Channel: "voice", After: time.Second},
}}

func TestFaults(t *testing.T) {
	began := time.Now()
	pg := startCluster(t)
	t.Run("KillWorker", func(t *testing.T) { testKillWorker(t, pg) })
	t.Run("SlowBacklog", func(t *testing.T) { testSlowBacklog(t, pg) })
	t.Run("ReadOnly", func(t *testing.T) { testReadOnly(t, pg) })
	t.Run("RestartImmediate", func(t *testing.T) { testRestartImmediate(t, pg) })
	t.Logf("the suite took %.1f s", time.Since(began).Seconds())
}

// testKillWorker: three workers send and deliver; twice, a worker is
// killed with SIGKILL while the sink holds one of its deliveries
// unanswered, and started again. A kill can duplicate only what the dead
// worker had handed to a channel without recording it yet: at most
// WithConcurrency steps of Run, plus one first step per Send in flight.
func testKillWorker(t *testing.T, pg *pgCluster) {
	const (
		workers = 3
		sends   = 150
		kills   = 2
	)
	o := workerOpts{senders: 2, concurrency: 4}
	s := newScenario(t, pg, threeSteps)
	s.sink.setDelay(30*time.Millisecond, 120*time.Millisecond)
	ws := make([]*workerProc, workers)
	for i := range ws {
		ws[i] = s.startWorker(i+1, o)
	}
	s.sink.setTickets(sends, false)

	var heldAtKill []string
	for k := range kills {
		victim := ws[k+1]
		waitFor(t, 60*time.Second, fmt.Sprintf("%d Sends to be handed out", (k+1)*sends/(kills+1)), func() bool {
			return s.sink.issuedCount() >= (k+1)*sends/(kills+1)
		})
		held := s.sink.whileInflight(victim.pid, 10*time.Second, victim.kill)
		if held == nil {
			t.Fatalf("worker %d (pid %d) had no delivery in flight within 10 s", victim.id, victim.pid)
		}
		<-victim.done
		s.sink.abandon(victim.pid)
		heldAtKill = append(heldAtKill, held...)
		t.Logf("kill -9 of worker %d (pid %d) after %d Sends were handed out, with %d deliveries in flight: %v",
			victim.id, victim.pid, s.sink.issuedCount(), len(held), held)
		ws[k+1] = s.startWorker(victim.id, o)
	}
	waitFor(t, 90*time.Second, "every Send to be handed out", func() bool { return s.sink.ticketsLeft() == 0 })
	s.quiesce(30 * time.Second)
	f := s.settle(30 * time.Second)

	out := countOutcomes(s.sink.reportsSince(time.Time{}))
	t.Logf("Sends handed out %d: %s", s.sink.issuedCount(), out)
	s.logFigures(f)
	bound := kills * (o.concurrency + o.senders)
	t.Logf("FIGURES kill -9: kills %d, missed %d, lost %d, duplicates %d (bound %d = %d kills x (WithConcurrency %d + %d Sends in flight))",
		kills, len(f.missed), len(f.lost), f.dups, bound, kills, o.concurrency, o.senders)

	if len(f.missed) > 0 {
		t.Errorf("%d steps of open verifications were never delivered: %v", len(f.missed), first(f.missed, 20))
	}
	if len(f.lost) > 0 {
		t.Errorf("%d Sends returned success but their verification is not stored: %v", len(f.lost), first(f.lost, 20))
	}
	if f.dups > bound {
		t.Errorf("%d duplicate deliveries; %d kills can explain at most %d", f.dups, kills, bound)
	}
	// A message the dead worker handed to the provider but never recorded
	// is sent again once its lease runs out (at least once delivery).
	for _, id := range heldAtKill {
		if n := s.sink.count(id); n < 2 {
			t.Errorf("message %s was in flight when its worker was killed, but was delivered %d times, not again", id, n)
		}
	}
	if n := out.byClass[opSend+"/"+classOK]; n == 0 {
		t.Errorf("no Send succeeded")
	}
	for _, e := range out.untyped {
		t.Errorf("untyped error: %s", e)
	}
	s.stopWorkers()
}

// backlogFlow sends an SMS, then an email and a voice call together three
// seconds later: two steps per verification fall due at once.
var backlogFlow = verify.Flow{Name: "backlog", Default: true, Steps: []verify.Step{
	{Channel: "sms"},
	{Channel: "email", After: 3 * time.Second},
	{Channel: "voice"},
}}

// testSlowBacklog: the parent starts verifications quickly, so that many
// fallback steps fall due within a second or two, and two live workers
// deliver them through a provider that takes 300–800 ms per message
// (within the 1 s send timeout). No step may go out twice.
func testSlowBacklog(t *testing.T, pg *pgCluster) {
	const (
		verifications = 60
		parallel      = 6
	)
	o := workerOpts{senders: 0, concurrency: 4}
	s := newScenario(t, pg, backlogFlow)
	s.startWorker(1, o)
	s.startWorker(2, o)
	s.sink.setDelay(300*time.Millisecond, 800*time.Millisecond) // the parent's own deliveries are not slowed

	ctx := context.Background()
	began := time.Now()
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		next = make(chan int64)
	)
	for range parallel {
		wg.Go(func() {
			for n := range next {
				if _, err := s.eng.Send(ctx, verify.SendRequest{To: recipient(1_000_000 + n)}); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for n := range int64(verifications) {
		next <- n
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d Sends failed, first: %v", len(errs), verifications, errs[0])
	}
	sent := time.Since(began)
	f := s.settle(90 * time.Second)
	total, byWorker, peak := s.sink.stats()
	s.logFigures(f)
	t.Logf("FIGURES slow backlog: %d verifications started in %.1f s, %d fallback steps falling due within that span; "+
		"drained %.1f s after the first; deliveries %d (parent %d, worker 1 %d, worker 2 %d), at most %d in flight; sent twice %d, missed %d",
		verifications, sent.Seconds(), 2*verifications, time.Since(began).Seconds(), total, byWorker[0], byWorker[1], byWorker[2], peak, f.dups, len(f.missed))
	if f.dups > 0 {
		t.Errorf("%d steps were sent twice by live engines", f.dups)
	}
	if len(f.missed) > 0 {
		t.Errorf("%d steps were never delivered: %v", len(f.missed), first(f.missed, 20))
	}
	if byWorker[1] == 0 || byWorker[2] == 0 {
		t.Errorf("both workers should have delivered part of the backlog: %v", byWorker)
	}
	s.stopWorkers()
}

// twoSteps sends an SMS, then an email a second later.
var twoSteps = verify.Flow{Name: "login", Default: true, Steps: []verify.Step{
	{Channel: "sms"},
	{Channel: "email", After: time.Second},
}}

// testReadOnly: while the server refuses writes, Send answers the
// store-unavailable error and hands nothing to a channel; once writes are
// allowed again, Sends succeed and the fallbacks held up meanwhile go out.
func testReadOnly(t *testing.T, pg *pgCluster) {
	const perPhase = 12
	o := workerOpts{senders: 2, concurrency: 4}
	s := newScenario(t, pg, twoSteps)
	s.startWorker(1, o)
	s.startWorker(2, o)

	// phase hands out n Sends and returns their tickets once all are
	// reported.
	phase := func(name string) []issued {
		from := s.sink.nextTicket()
		s.sink.setTickets(perPhase, false)
		waitFor(t, 30*time.Second, name+": every Send to be handed out", func() bool { return s.sink.ticketsLeft() == 0 })
		s.quiesce(30 * time.Second)
		return s.sink.ticketsFrom(from)
	}
	tally := func(tks []issued) map[string]int {
		m := map[string]int{}
		for _, tk := range tks {
			m[tk.send.Class]++
		}
		return m
	}

	before := phase("before")
	if c := tally(before); c[classOK] != perPhase {
		t.Fatalf("before the server refuses writes, every Send should succeed: %v", c)
	}

	t.Cleanup(func() { // leave the cluster writable whatever happens
		_, _ = pg.admin.Exec(`ALTER SYSTEM RESET default_transaction_read_only`)
		_, _ = pg.admin.Exec(`SELECT pg_reload_conf()`)
	})
	pg.setReadOnly(t, true)
	during := phase("read-only")
	pg.setReadOnly(t, false)
	c := tally(during)
	var phones []string
	reached := 0
	for _, tk := range during {
		r := tk.send
		if r.Class != classUnavailable {
			t.Errorf("read-only: Send to %s answered %s %s %q; want the unavailable error %s", tk.To.Phone, r.Class, r.Code, r.Err, codeUnavailable)
		}
		phones = append(phones, tk.To.Phone)
		if ds := s.sink.deliveredTo(tk.To.Phone); len(ds) > 0 {
			reached++
			t.Errorf("read-only: the Send to %s failed (%s), yet a channel delivered %d messages to it", tk.To.Phone, r.Class, len(ds))
		}
	}
	var storedRefused int
	if err := s.store.DB().QueryRow(`SELECT count(*) FROM verifications WHERE to_phone = ANY($1)`, phones).Scan(&storedRefused); err != nil {
		t.Fatal(err)
	}
	if storedRefused > 0 {
		t.Errorf("read-only: %d verifications were stored for refused Sends", storedRefused)
	}

	after := phase("after")
	ca := tally(after)
	if ca[classOK] != perPhase {
		for _, tk := range after {
			if tk.send.Class != classOK {
				t.Errorf("writes allowed again: Send answered %s %s %q", tk.send.Class, tk.send.Code, tk.send.Err)
			}
		}
	}
	f := s.settle(30 * time.Second)
	s.logFigures(f)
	t.Logf("FIGURES read-only: before %v; while read-only %v (typed unavailable %d of %d; sink messages for them %d, stored %d); after %v",
		tally(before), c, c[classUnavailable], perPhase, reached, storedRefused, ca)
	if len(f.missed) > 0 {
		t.Errorf("%d steps of open verifications were never delivered: %v", len(f.missed), first(f.missed, 20))
	}
	if len(f.lost) > 0 {
		t.Errorf("%d Sends returned success but their verification is not stored: %v", len(f.lost), first(f.lost, 20))
	}
	s.stopWorkers()
}

// testRestartImmediate: three workers send (each successful Send followed
// by a wrong-code Check) and deliver while the server is restarted with
// pg_ctl restart -m immediate. Every error is a *verify.Error, every
// worker sends successfully again soon after the server accepts
// connections, nothing acknowledged is lost, and every open verification
// verifies with its code afterwards.
func testRestartImmediate(t *testing.T, pg *pgCluster) {
	const (
		workers     = 3
		maxRecovery = 10 * time.Second
	)
	o := workerOpts{senders: 2, concurrency: 4}
	s := newScenario(t, pg, threeSteps)
	s.sink.setDelay(20*time.Millisecond, 60*time.Millisecond)
	ws := make([]*workerProc, workers)
	for i := range ws {
		ws[i] = s.startWorker(i+1, o)
	}
	okSends := func(since time.Time) map[int][]report {
		m := map[int][]report{}
		for _, r := range s.sink.reportsSince(since) {
			if r.Op == opSend && r.Class == classOK {
				m[r.Worker] = append(m[r.Worker], r)
			}
		}
		return m
	}
	count := func(m map[int][]report) int {
		n := 0
		for _, rs := range m {
			n += len(rs)
		}
		return n
	}
	s.sink.setTickets(5000, true) // a cap; the load is stopped below
	waitFor(t, 60*time.Second, "30 successful Sends before the restart", func() bool { return count(okSends(time.Time{})) >= 30 })

	poller := pg.pollUp()
	defer poller.close()
	restartAt := time.Now()
	pg.restartImmediate(t)
	restarted := time.Now()
	waitFor(t, 10*time.Second, "the up-poller to see the server down and up again", func() bool {
		_, up := poller.times()
		return !up.IsZero()
	})
	down, up := poller.times()
	t.Logf("restart: pg_ctl took %.2f s; the server refused connections from +%.2f s and accepted them again at +%.2f s",
		restarted.Sub(restartAt).Seconds(), down.Sub(restartAt).Seconds(), up.Sub(restartAt).Seconds())

	recovery := map[int]time.Duration{}
	poll(30*time.Second, func() bool {
		for w, rs := range okSends(up) {
			if _, ok := recovery[w]; !ok {
				recovery[w] = rs[0].At.Sub(up)
			}
		}
		return len(recovery) == workers
	})
	var worst time.Duration
	for w := 1; w <= workers; w++ {
		d, ok := recovery[w]
		if !ok {
			t.Errorf("worker %d made no successful Send within 30 s of the server accepting connections again", w)
			continue
		}
		worst = max(worst, d)
	}
	// Keep the load on for a while after the recovery.
	after := count(okSends(up))
	waitFor(t, 30*time.Second, "30 more successful Sends after the recovery", func() bool { return count(okSends(up)) >= after+30 })
	s.quiesce(30 * time.Second)
	f := s.settle(30 * time.Second)

	all := s.sink.reportsSince(time.Time{})
	out := countOutcomes(all)
	s.logFigures(f)

	// Every open verification verifies with the code the sink saw, through
	// a new engine.
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, s.dsn, sqlstore.WithMaxConns(poolSize))
	if err != nil {
		t.Fatalf("opening a new store after the restart: %v", err)
	}
	defer st.Close()
	eng, err := newEngine(st, s.secret, newSinkClient(s.sink.URL(), 0), quietLog, 4)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := st.DB().Query(`SELECT id FROM verifications WHERE ended_at IS NULL ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var open []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		open = append(open, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	verified, noCode := 0, 0
	var checkErrs []string
	for _, id := range open {
		code, ok := s.sink.code(id)
		if !ok {
			noCode++
			continue
		}
		if _, err := eng.Check(ctx, verify.CheckRequest{VerifyID: id, Code: code}); err != nil {
			checkErrs = append(checkErrs, fmt.Sprintf("%s: %v", id, err))
			continue
		}
		verified++
	}

	bound := workers * (o.concurrency + o.senders)
	recov := make([]string, 0, len(recovery))
	for w := 1; w <= workers; w++ {
		if d, ok := recovery[w]; ok {
			recov = append(recov, fmt.Sprintf("worker %d %.2f s", w, d.Seconds()))
		}
	}
	untyped := len(out.untyped)
	t.Logf("calls: %s", out)
	t.Logf("FIGURES restart -m immediate: server down %.2f s; recovery (server accepting → first successful Send) %v, worst %.2f s (bound %s); "+
		"errors typed unavailable %d (send %d, check %d), internal %d, other refusals %d, untyped %d; lost %d, missed %d, duplicates %d (bound %d); "+
		"open verifications afterwards %d, verified with the sink's code %d",
		up.Sub(down).Seconds(), recov, worst.Seconds(), maxRecovery,
		out.byClass[opSend+"/"+classUnavailable]+out.byClass[opCheck+"/"+classUnavailable],
		out.byClass[opSend+"/"+classUnavailable], out.byClass[opCheck+"/"+classUnavailable], len(out.internal),
		out.byClass[opSend+"/"+classRefusal]+out.byClass[opCheck+"/"+classRefusal]-out.byCode[opCheck+"/E912"],
		untyped, len(f.lost), len(f.missed), f.dups, bound, len(open), verified)

	for _, e := range first(out.untyped, 20) {
		t.Errorf("untyped error: %s", e)
	}
	for _, e := range first(out.internal, 20) {
		t.Errorf("E925 for a restart, which a retry can fix: %s", e)
	}
	if untyped > 20 {
		t.Errorf("... and %d more untyped errors", untyped-20)
	}
	if worst > maxRecovery {
		t.Errorf("the slowest worker took %s to send successfully after the server came back; want at most %s", worst, maxRecovery)
	}
	if len(f.lost) > 0 {
		t.Errorf("%d Sends returned success but their verification is not stored: %v", len(f.lost), first(f.lost, 20))
	}
	if len(f.missed) > 0 {
		t.Errorf("%d steps of open verifications were never delivered: %v", len(f.missed), first(f.missed, 20))
	}
	if f.dups > bound {
		t.Errorf("%d duplicate deliveries; one restart can explain at most %d (each worker's WithConcurrency + Sends in flight)", f.dups, bound)
	}
	if noCode > 0 {
		t.Errorf("%d open verifications have no message at the sink", noCode)
	}
	for _, e := range first(checkErrs, 20) {
		t.Errorf("after the restart, an open verification does not verify with its code: %s", e)
	}
	s.stopWorkers()
}
