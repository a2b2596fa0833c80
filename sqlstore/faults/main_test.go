package faults

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
)

// TestMain runs a worker instead of the tests when the parent re-executes
// the test binary as one (see workerMain).
func TestMain(m *testing.M) {
	if os.Getenv(envRole) == roleWorker {
		os.Exit(workerMain())
	}
	os.Exit(m.Run())
}

// scenario is one scenario's schema, sink, workers, and the parent's own
// engine, which runs no Run: it creates the flow, makes the Sends of the
// backlog scenario and checks codes afterwards.
type scenario struct {
	t      *testing.T
	pg     *pgCluster
	dsn    string
	secret []byte
	sink   *sink
	store  *sqlstore.Store
	eng    *verify.Engine
	procs  []*workerProc
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func newScenario(t *testing.T, pg *pgCluster, flow verify.Flow) *scenario {
	t.Helper()
	s := &scenario{t: t, pg: pg, dsn: pg.newSchema(t), secret: make([]byte, 32), sink: newSink(t)}
	_, _ = rand.Read(s.secret)
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, s.dsn, sqlstore.WithMaxConns(poolSize))
	if err != nil {
		t.Fatalf("opening the scenario's store: %v", err)
	}
	s.store = st
	if s.eng, err = newEngine(st, s.secret, newSinkClient(s.sink.URL(), 0), quietLog, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := s.eng.CreateFlow(ctx, flow); err != nil {
		t.Fatalf("creating the flow: %v", err)
	}
	t.Cleanup(func() {
		for _, w := range s.procs {
			if !w.exited() {
				w.kill()
				<-w.done
			}
		}
		if t.Failed() {
			for _, w := range s.procs {
				t.Logf("output of worker %d (pid %d, killed=%v):\n%s", w.id, w.pid, w.killed, tail(w.out.String(), 25))
			}
		}
		st.Close()
	})
	return s
}

// stopWorkers stops every live worker cleanly.
func (s *scenario) stopWorkers() {
	for _, w := range s.procs {
		if !w.exited() {
			w.stop(s.t)
		}
	}
}

// quiesce stops handing out Sends and waits until every Send handed out
// has been reported.
func (s *scenario) quiesce(d time.Duration) {
	s.t.Helper()
	s.sink.setTickets(0, false)
	waitFor(s.t, d, "every Send handed out to be reported", s.sink.settled)
}

// figures is the state of a scenario's verifications against what the sink
// received.
type figures struct {
	stored  int      // verifications in the database
	open    int      // of which open and unexpired
	steps   int      // steps of the open ones
	missed  []string // Message.IDs of steps of open verifications never delivered
	pending int      // pending step rows
	lost    []string // IDs that a Send returned with success but the database lacks
	dups    int      // deliveries of a Message.ID beyond its first
	dupIDs  map[string][]delivery
}

// account reads the database and compares it with the sink and the
// reports.
func (s *scenario) account() (figures, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var f figures
	db := s.store.DB()
	rows, err := db.QueryContext(ctx, `SELECT id, ended_at IS NULL AND expires_at > $1, json_array_length(steps) FROM verifications`, time.Now())
	if err != nil {
		return f, err
	}
	stored := make(map[string]bool)
	for rows.Next() {
		var (
			id    string
			open  bool
			steps int
		)
		if err := rows.Scan(&id, &open, &steps); err != nil {
			rows.Close()
			return f, err
		}
		stored[id] = true
		if !open {
			continue
		}
		f.open++
		f.steps += steps
		for i := range steps {
			if mid := fmt.Sprintf("%s-%d", id, i); s.sink.count(mid) == 0 {
				f.missed = append(f.missed, mid)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return f, err
	}
	rows.Close()
	f.stored = len(stored)
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pending_steps`).Scan(&f.pending); err != nil {
		return f, err
	}
	for _, r := range s.sink.reportsSince(time.Time{}) {
		if r.Op == opSend && r.Class == classOK && !stored[r.ID] {
			f.lost = append(f.lost, r.ID)
		}
	}
	slices.Sort(f.missed)
	f.dupIDs, f.dups = s.sink.duplicates()
	return f, nil
}

// settle waits until everything due has been processed: no pending step
// left and every step of every open verification delivered. It returns
// the figures then, or the last ones when d ran out (the assertions then
// say what is missing).
func (s *scenario) settle(d time.Duration) figures {
	s.t.Helper()
	var (
		f   figures
		err error
	)
	began := time.Now()
	ok := poll(d, func() bool {
		f, err = s.account()
		return err == nil && f.pending == 0 && len(f.missed) == 0
	})
	if err != nil {
		s.t.Fatalf("reading the database: %v", err)
	}
	if !ok {
		s.t.Errorf("after %s, %d pending steps remain and %d steps of open verifications were never delivered", d, f.pending, len(f.missed))
	} else {
		s.t.Logf("everything due was processed %.1f s after the load stopped", time.Since(began).Seconds())
	}
	return f
}

// logFigures prints the figures every scenario shares.
func (s *scenario) logFigures(f figures) {
	s.t.Helper()
	s.t.Logf("verifications stored %d, open %d with %d steps; missed steps %d, lost verifications %d, duplicates %d, pending %d",
		f.stored, f.open, f.steps, len(f.missed), len(f.lost), f.dups, f.pending)
	for _, id := range slices.Sorted(maps.Keys(f.dupIDs)) {
		var who []string
		for _, d := range f.dupIDs[id] {
			who = append(who, fmt.Sprintf("worker %d pid %d at %s", d.Worker, d.PID, d.At.Format("15:04:05.000")))
		}
		s.t.Logf("  duplicate %s: %s", id, strings.Join(who, "; "))
	}
	if len(f.missed) > 0 {
		s.t.Logf("  missed: %s", strings.Join(first(f.missed, 20), " "))
	}
	if len(f.lost) > 0 {
		s.t.Logf("  lost: %s", strings.Join(first(f.lost, 20), " "))
	}
}

func first[T any](s []T, n int) []T { return s[:min(n, len(s))] }

// outcomes counts reports by op and class, and by refusal code.
type outcomes struct {
	byClass map[string]int // "op/class"
	byCode  map[string]int // "op/code" of refusals and unavailable errors
	untyped []string       // the texts of untyped and context errors
	// internal are the texts of E925 errors: a database restart or a
	// read-only database is a failure a retry can fix, never E925.
	internal []string
}

func countOutcomes(rs []report) outcomes {
	o := outcomes{byClass: map[string]int{}, byCode: map[string]int{}}
	for _, r := range rs {
		o.byClass[r.Op+"/"+r.Class]++
		if r.Code != "" {
			o.byCode[r.Op+"/"+r.Code]++
		}
		if r.Class == classUntyped || r.Class == classContext {
			o.untyped = append(o.untyped, fmt.Sprintf("%s (worker %d): %s", r.Op, r.Worker, r.Err))
		}
		if r.Class == classInternal {
			o.internal = append(o.internal, fmt.Sprintf("%s (worker %d): %s", r.Op, r.Worker, r.Err))
		}
	}
	return o
}

func (o outcomes) String() string {
	b, _ := json.Marshal(o.byClass)
	c, _ := json.Marshal(o.byCode)
	return fmt.Sprintf("by class %s, by code %s", b, c)
}
