package faults

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/testutil"
	"github.com/openverify/verify/sqlstore"
)

// The engines' timing: short, on the wall clock.
const (
	lease       = 3 * time.Second
	sendTimeout = time.Second
	pollEvery   = 200 * time.Millisecond
	// callTimeout bounds each Send and Check a worker makes; a call that
	// runs into it is counted as an untyped error.
	callTimeout = 10 * time.Second
	// poolSize is each Store's connection pool.
	poolSize = 8
)

// The environment that makes the test binary a worker.
const (
	envRole        = "FAULTS_ROLE" // "worker"
	envDSN         = "FAULTS_DSN"
	envSink        = "FAULTS_SINK"
	envWorker      = "FAULTS_WORKER" // the worker's ID, from 1
	envSecret      = "FAULTS_SECRET" // hex
	envSenders     = "FAULTS_SENDERS"
	envConcurrency = "FAULTS_CONCURRENCY"
	roleWorker     = "worker"
)

// Report ops and classes.
const (
	opSend  = "send"
	opCheck = "check"

	classOK          = "ok"
	classUnavailable = "unavailable" // the store-unavailable *verify.Error (E926)
	classInternal    = "internal"    // E925: a failure a retry cannot fix
	classRefusal     = "refusal"     // another *verify.Error
	classContext     = "context"     // the call's own deadline ran out
	classUntyped     = "untyped"     // anything else
)

// codeUnavailable is the code of verify.ErrUnavailable.
var codeUnavailable = verify.ErrUnavailable.Code

// unavailable reports whether err is the engine's "store unavailable, try
// again" error.
func unavailable(err error) bool { return errors.Is(err, verify.ErrUnavailable) }

// classify sorts a call's outcome into one of the classes above.
func classify(err error) (class, code string) {
	switch {
	case err == nil:
		return classOK, ""
	case unavailable(err):
		return classUnavailable, codeUnavailable
	case errors.Is(err, verify.ErrInternal):
		return classInternal, verify.ErrInternal.Code
	}
	if e, ok := verify.AsError(err); ok {
		return classRefusal, e.Code
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return classContext, ""
	}
	return classUntyped, ""
}

// sinkClient talks to the parent's sink on behalf of one process.
type sinkClient struct {
	base   string
	worker int // 0 for the parent
	pid    int
	http   *http.Client
}

func newSinkClient(base string, worker int) *sinkClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &sinkClient{base: base, worker: worker, pid: os.Getpid(), http: &http.Client{Transport: tr}}
}

func (c *sinkClient) post(ctx context.Context, path string, body any) (*http.Response, error) {
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path+"?pid="+strconv.Itoa(c.pid), &buf)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.http.Do(req)
}

// sinkChannel is a verify.Channel that delivers to the sink.
type sinkChannel struct {
	name string
	addr verify.Addressing
	c    *sinkClient
}

func (ch *sinkChannel) Name() string                  { return ch.name }
func (ch *sinkChannel) Addressing() verify.Addressing { return ch.addr }

func (ch *sinkChannel) Send(ctx context.Context, m verify.Message) (verify.Receipt, error) {
	resp, err := ch.c.post(ctx, "/deliver", delivery{ID: m.ID, VerificationID: m.VerificationID, Step: m.Step,
		Channel: m.Channel, Code: m.Code, To: m.To, Worker: ch.c.worker, PID: ch.c.pid})
	if err != nil {
		return verify.Receipt{}, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return verify.Receipt{}, fmt.Errorf("sink answered %s", resp.Status)
	}
	return verify.Receipt{ProviderID: "sink-" + m.ID}, nil
}

// newEngine builds an engine as every process of the suite does, as a
// fleet is configured: the default protections, with the rate limits
// shared in the database (which decides them in the write that stores a
// Send's verification).
func newEngine(st verify.Store, secret []byte, c *sinkClient, log *slog.Logger, concurrency int) (*verify.Engine, error) {
	return verify.New(st,
		verify.WithLimiter(verify.NewStoreLimiter(st)),
		verify.WithChannels(
			&sinkChannel{name: "sms", addr: verify.ByPhone, c: c},
			&sinkChannel{name: "email", addr: verify.ByEmail, c: c},
			&sinkChannel{name: "voice", addr: verify.ByPhone, c: c}),
		verify.WithSecret(secret),
		verify.WithClock(clock.New()),
		verify.WithLease(lease),
		verify.WithSendTimeout(sendTimeout),
		verify.WithPollInterval(pollEvery),
		verify.WithConcurrency(concurrency),
		verify.WithLogger(log))
}

// workerMain is a worker process: it runs an engine with Run on the
// parent's database, makes the Sends the sink hands out, reports every
// outcome, and exits once its standard input is closed.
func workerMain() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "worker: "+format+"\n", args...)
		return 2
	}
	id, err := strconv.Atoi(os.Getenv(envWorker))
	if err != nil || id < 1 {
		return fail("bad %s: %q", envWorker, os.Getenv(envWorker))
	}
	secret, err := hex.DecodeString(os.Getenv(envSecret))
	if err != nil {
		return fail("bad %s: %v", envSecret, err)
	}
	senders, _ := strconv.Atoi(os.Getenv(envSenders))
	concurrency, _ := strconv.Atoi(os.Getenv(envConcurrency))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the parent closes our standard input to stop us
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).
		With("worker", id)
	st, err := sqlstore.Open(ctx, os.Getenv(envDSN), sqlstore.WithMaxConns(poolSize))
	if err != nil {
		return fail("open store: %v", err)
	}
	defer st.Close()
	c := newSinkClient(os.Getenv(envSink), id)
	eng, err := newEngine(st, secret, c, log, concurrency)
	if err != nil {
		return fail("new engine: %v", err)
	}

	var wg sync.WaitGroup
	wg.Go(func() { _ = eng.Run(ctx) })
	for range senders {
		wg.Go(func() { sender(ctx, eng, c) })
	}
	resp, err := c.post(ctx, "/ready", nil)
	if err != nil {
		cancel()
		wg.Wait()
		return fail("ready: %v", err)
	}
	resp.Body.Close()
	wg.Wait()
	return 0
}

// sender makes the Sends the sink hands out until ctx is done.
func sender(ctx context.Context, eng *verify.Engine, c *sinkClient) {
	for ctx.Err() == nil {
		tk, ok := nextTicket(ctx, c)
		if !ok {
			sleep(ctx, 25*time.Millisecond)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		v, err := eng.Send(cctx, verify.SendRequest{To: tk.To})
		cancel()
		c.report(tk, opSend, v.ID, err)
		if err == nil && tk.Check {
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			_, err := eng.Check(cctx, verify.CheckRequest{VerifyID: v.ID, Code: "000000"})
			cancel()
			c.report(tk, opCheck, v.ID, err)
		}
		if err != nil {
			sleep(ctx, 50*time.Millisecond) // do not spin while the database is away
		}
	}
}

func nextTicket(ctx context.Context, c *sinkClient) (ticket, bool) {
	resp, err := c.post(ctx, "/ticket", nil)
	if err != nil {
		return ticket{}, false
	}
	defer resp.Body.Close()
	var tk ticket
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&tk) != nil {
		return ticket{}, false
	}
	return tk, true
}

// report tells the sink a call's outcome. It uses its own context: a call
// cut short by the worker's stop is reported too.
func (c *sinkClient) report(tk ticket, op, id string, err error) {
	r := report{Worker: c.worker, PID: c.pid, Ticket: tk.N, Op: op, ID: id}
	r.Class, r.Code = classify(err)
	if err != nil {
		r.Err = err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := c.post(ctx, "/report", r); err == nil {
		resp.Body.Close()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// workerProc is the parent's handle on a worker process.
type workerProc struct {
	id, pid int
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	out     *testutil.Buffer // the worker's output
	done    chan struct{}
	err     error // from Wait, once done is closed
	killed  bool
}

// workerOpts is what a worker does besides running Run.
type workerOpts struct {
	senders     int // goroutines making the Sends the sink hands out
	concurrency int // WithConcurrency
}

// startWorker re-executes the test binary as worker id and waits until it
// is ready.
func (s *scenario) startWorker(id int, o workerOpts) *workerProc {
	t := s.t
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFaults$")
	cmd.Env = append(os.Environ(),
		envRole+"="+roleWorker,
		envDSN+"="+s.dsn,
		envSink+"="+s.sink.URL(),
		envWorker+"="+strconv.Itoa(id),
		envSecret+"="+hex.EncodeToString(s.secret),
		envSenders+"="+strconv.Itoa(o.senders),
		envConcurrency+"="+strconv.Itoa(o.concurrency))
	w := &workerProc{id: id, cmd: cmd, out: &testutil.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = w.out, w.out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	w.stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting worker %d: %v", id, err)
	}
	w.pid = cmd.Process.Pid
	go func() {
		w.err = cmd.Wait()
		close(w.done)
	}()
	s.procs = append(s.procs, w)
	ok := poll(60*time.Second, func() bool { return s.sink.isReady(w.pid) || w.exited() })
	if !ok || w.exited() {
		t.Fatalf("worker %d (pid %d) did not come up: exited=%v %v\n%s", id, w.pid, w.exited(), w.err, tail(w.out.String(), 30))
	}
	return w
}

func (w *workerProc) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL, without waiting for the process to be reaped.
func (w *workerProc) kill() {
	w.killed = true
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
}

// stop asks the worker to exit (by closing its standard input) and checks
// that it exits cleanly: a data race in a worker makes it exit with 66.
func (w *workerProc) stop(t *testing.T) {
	t.Helper()
	_ = w.stdin.Close()
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		w.kill()
		<-w.done
		t.Errorf("worker %d (pid %d) did not stop within 30 s\n%s", w.id, w.pid, tail(w.out.String(), 30))
		return
	}
	if w.err != nil {
		t.Errorf("worker %d (pid %d) exited with %v\n%s", w.id, w.pid, w.err, tail(w.out.String(), 60))
	}
}
