package sqlstore_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
)

// The worker processes of TestWALBoundedAcrossProcesses are the test binary
// run again with these variables set: the SQLite file, and the worker's
// number.
const (
	walWorkerDB = "SQLSTORE_TEST_WAL_WORKER_DB"
	walWorkerID = "SQLSTORE_TEST_WAL_WORKER_ID"
)

// The load of TestWALBoundedAcrossProcesses: walWorkers processes, each
// running walCallers goroutines of Send + Check until they have made
// walPairs pairs between them or walLoadFor has passed, whichever comes
// first; and, in the test's own process, walPollers goroutines that poll a
// verification's status, each on a connection of its own.
const (
	walWorkers = 2
	walCallers = 2
	walPairs   = 1500
	walLoadFor = 8 * time.Second
	walPollers = 4
)

// walBound is the largest -wal file TestWALBoundedAcrossProcesses accepts.
// The Store checkpoints the file past 4 MiB and empties it past 8 MiB, and
// it grew to 10 MB at most; this leaves room for a doubling after
// checkpoints that readers held off. Without the Store's checkpoints it grew
// to 40–80 MB under -race, and to 430–450 MB without.
const walBound = 24 << 20

// TestWALBoundedAcrossProcesses runs Send + Check in two processes (the test
// binary run again, as workers) on one SQLite file, while this process polls
// a verification's status, and samples the size of the -wal file meanwhile.
// With several busy processes some connection is always reading the log, so
// SQLite's own (PASSIVE) checkpoints can never start it over, and left to
// them it grows with every commit: the Store must keep it bounded.
func TestWALBoundedAcrossProcesses(t *testing.T) {
	if path := os.Getenv(walWorkerDB); path != "" {
		walWorker(t, path)
		return
	}
	path := filepath.Join(t.TempDir(), "verify.db")
	wal := path + "-wal"
	ctx := context.Background()
	// Migrate, and create the flow and the polled verification, before the
	// workers start.
	eng, err := verify.New(open(t, "sqlite:"+path, sqlstore.WithMaxConns(walPollers)),
		verify.WithChannels(nopChannel{}), verify.WithSecret(testSecret), verify.WithClock(newClock()),
		verify.WithLogger(quietLog), verify.WithProtection(verify.NoProtection()))
	require.NoError(t, err)
	_, err = eng.CreateFlow(ctx, verify.Flow{Name: "wal", Default: true, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	polled, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4790000000"}})
	require.NoError(t, err)

	// Sample the size of the log, and poll, until the workers are done.
	var peak, samples, polls atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	var background sync.WaitGroup
	background.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			if fi, err := os.Stat(wal); err == nil {
				samples.Add(1)
				if fi.Size() > peak.Load() {
					peak.Store(fi.Size())
				}
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	for range walPollers {
		background.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := eng.Get(ctx, polled.ID); err != nil {
					t.Errorf("poll: %v", err)
					return
				}
				polls.Add(1)
			}
		})
	}

	wctx, cancel := context.WithTimeout(ctx, walLoadFor+30*time.Second)
	defer cancel()
	type worker struct {
		cmd *exec.Cmd
		out bytes.Buffer
	}
	workers := make([]*worker, walWorkers)
	began := time.Now()
	for i := range workers {
		w := &worker{cmd: exec.CommandContext(wctx, os.Args[0], "-test.run=^TestWALBoundedAcrossProcesses$", "-test.v")}
		w.cmd.Env = append(os.Environ(), walWorkerDB+"="+path, walWorkerID+"="+strconv.Itoa(i+1))
		w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
		require.NoError(t, w.cmd.Start())
		workers[i] = w
	}
	for i, w := range workers {
		if err := w.cmd.Wait(); err != nil {
			t.Errorf("worker %d: %v\n%s", i+1, err, w.out.String())
		}
	}
	took := time.Since(began)
	close(done)
	close(stop)
	background.Wait()

	for i, w := range workers {
		for line := range bytes.Lines(w.out.Bytes()) {
			if line = bytes.TrimSpace(line); bytes.HasPrefix(line, []byte("wal_test.go")) {
				t.Logf("worker %d: %s", i+1, line)
			}
		}
	}
	db, err := os.Stat(path)
	require.NoError(t, err)
	t.Logf("%d processes × %d callers and %d pollers, %v: -wal peak %.1f MB (%d samples), database %.1f MB, %d polls",
		walWorkers, walCallers, walPollers, took.Round(time.Millisecond), float64(peak.Load())/1e6, samples.Load(),
		float64(db.Size())/1e6, polls.Load())
	assert.Less(t, peak.Load(), int64(walBound), "the -wal file stays under %d MiB", walBound>>20)
}

// walWorker is one worker process of TestWALBoundedAcrossProcesses: an
// engine with its own Store on the file at path, running Send + Check from
// walCallers goroutines.
func walWorker(t *testing.T, path string) {
	id, err := strconv.Atoi(os.Getenv(walWorkerID))
	require.NoError(t, err)
	ctx := context.Background()
	eng, err := verify.New(open(t, "sqlite:"+path), verify.WithChannels(nopChannel{}), verify.WithSecret(testSecret),
		verify.WithClock(newClock()), verify.WithLogger(quietLog), verify.WithProtection(verify.NoProtection()))
	require.NoError(t, err)

	var n, failed atomic.Int64
	deadline := time.Now().Add(walLoadFor)
	var wg sync.WaitGroup
	began := time.Now()
	for range walCallers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				i := n.Add(1)
				if i > walPairs {
					return
				}
				// A recipient of this worker's own, so that the workers'
				// verifications never meet.
				to := verify.Recipient{Phone: fmt.Sprintf("+4%d%06d1234", id, i)}
				v, err := eng.Send(ctx, verify.SendRequest{To: to, Code: "123456"})
				if err == nil {
					_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: "123456"})
				}
				if err != nil && failed.Add(1) <= 5 {
					t.Errorf("pair %d: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d Send + Check pairs in %v, %d failed", min(n.Load(), walPairs), time.Since(began).Round(time.Millisecond), failed.Load())
}

// TestWALOneProcess checks the Store's checkpoints in one process, and that
// a DSN's own wal_autocheckpoint wins. Written in commits of 100 KiB, or by
// Counters.Take, whose statements SQLite's own checkpoints never follow (see
// wal.go), 12 MB leave a -wal file of at most about twice 4 MiB; a DSN that
// turns automatic checkpoints off gets none from the Store either.
func TestWALOneProcess(t *testing.T) {
	ctx := context.Background()
	autocheckpoint := func(t *testing.T, st *sqlstore.Store) int64 {
		var v int64
		require.NoError(t, st.DB().QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&v))
		return v
	}
	// blobs commits 12 MB in 120 blobs; takes counts 3,000 times on 1,000
	// counters (about 12 MB of log). Each returns the largest size of the
	// -wal file seen after a commit, and its size at the end.
	blobs := func(t *testing.T, st *sqlstore.Store, wal string) (peak, last int64) {
		_, err := st.DB().ExecContext(ctx, `CREATE TABLE blobs (b BLOB)`)
		require.NoError(t, err)
		blob := make([]byte, 100<<10)
		for range 120 {
			_, err := st.DB().ExecContext(ctx, `INSERT INTO blobs (b) VALUES ($1)`, blob)
			require.NoError(t, err)
			last = fileSize(t, wal)
			peak = max(peak, last)
		}
		return peak, last
	}
	takes := func(t *testing.T, st *sqlstore.Store, wal string) (peak, last int64) {
		for i := range 3000 {
			res, err := st.Take(ctx, start, []verify.Take{{Key: "wal:" + strconv.Itoa(i%1000), Delta: 1,
				Max: verify.NoLimit, ExpiresAt: start.Add(time.Hour)}})
			require.NoError(t, err)
			require.True(t, res.OK)
			last = fileSize(t, wal)
			peak = max(peak, last)
		}
		return peak, last
	}
	const bound = 10 << 20
	for _, w := range []struct {
		name  string
		write func(t *testing.T, st *sqlstore.Store, wal string) (peak, last int64)
	}{{"blobs", blobs}, {"takes", takes}} {
		t.Run(w.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "verify.db")
			st := open(t, "sqlite:"+path)
			assert.Zero(t, autocheckpoint(t, st), "SQLite's automatic checkpoints are off")
			peak, _ := w.write(t, st, path+"-wal")
			t.Logf("-wal peak %.1f MB", float64(peak)/1e6)
			assert.Less(t, peak, int64(bound), "the Store checkpoints past 4 MiB")
		})
	}
	t.Run("DSN turns checkpoints off", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "verify.db")
		st := open(t, "sqlite:"+path+"?_pragma=wal_autocheckpoint(0)")
		_, last := blobs(t, st, path+"-wal")
		assert.Greater(t, last, int64(12e6), "no checkpoints: the log holds every commit")
	})
	t.Run("DSN keeps SQLite's checkpoints", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "verify.db")
		st := open(t, "sqlite:"+path+"?_pragma=wal_autocheckpoint(500)")
		assert.Equal(t, int64(500), autocheckpoint(t, st))
		peak, _ := blobs(t, st, path+"-wal")
		assert.Less(t, peak, int64(4<<20), "SQLite checkpoints at 500 pages")
	})
}

// fileSize returns the size of the file at path.
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Size()
}
