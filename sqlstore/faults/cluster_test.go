package faults

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	// Registers the "pgx" database/sql driver.
	_ "github.com/jackc/pgx/v5/stdlib"
)

// pgCluster is a PostgreSQL cluster of the test's own, in a temporary
// directory, with PostgreSQL's default durability.
type pgCluster struct {
	bin    string // the directory holding initdb and pg_ctl
	dir    string // the temporary directory: data/, log and the socket
	asUser bool   // run the binaries as the postgres user (we are root)
	port   int

	admin *sql.DB // sessions immune to default_transaction_read_only
}

// skipOrFail skips the test, or fails it under CI=true, where the suite
// must run.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; CI=true, so the fault-injection suite must run (CI installs the postgresql package)", msg)
	}
	t.Skipf("%s; skipping the fault-injection suite", msg)
}

// findPGBin returns the highest-versioned /usr/lib/postgresql/*/bin that
// holds initdb and pg_ctl, or "".
func findPGBin() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) []int {
		var v []int
		for _, p := range strings.Split(filepath.Base(filepath.Dir(d)), ".") {
			n, _ := strconv.Atoi(p)
			v = append(v, n)
		}
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return slices.Compare(version(b), version(a)) })
	for _, d := range dirs {
		if executable(filepath.Join(d, "initdb")) && executable(filepath.Join(d, "pg_ctl")) {
			return d
		}
	}
	return ""
}

// reachableTempDir is os.TempDir() if every directory on its path lets
// other users through, as the postgres user must get through; else /tmp.
func reachableTempDir() string {
	dir := os.TempDir()
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return "/tmp"
		}
		if d == filepath.Dir(d) {
			return dir
		}
	}
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// startCluster creates, starts and returns a cluster that is stopped and
// removed when the test ends.
func startCluster(t *testing.T) *pgCluster {
	t.Helper()
	bin := findPGBin()
	if bin == "" {
		skipOrFail(t, "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin")
	}
	c := &pgCluster{bin: bin, asUser: os.Geteuid() == 0}
	uid, gid := -1, -1
	if c.asUser {
		u, err := user.Lookup("postgres")
		if err != nil {
			skipOrFail(t, "running as root, but there is no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		if _, err := exec.LookPath("runuser"); err != nil {
			skipOrFail(t, "running as root, but runuser is missing: %v", err)
		}
	}
	// Not t.TempDir: the postgres user must be able to reach the
	// directory, and t.TempDir's parents are private to the test's user.
	dir, err := os.MkdirTemp(reachableTempDir(), "openverify-faults-")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	t.Cleanup(c.remove)
	if c.asUser {
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := c.pg("initdb", "-D", c.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-instructions"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	var lastErr error
	for range 3 { // another process may take the free port first
		c.port = freePort(t)
		if lastErr = c.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("starting PostgreSQL: %v\nlog:\n%s", lastErr, c.log())
	}
	admin, err := sql.Open("pgx", c.dsn("postgres", url.Values{"default_transaction_read_only": {"off"}}))
	if err != nil {
		t.Fatal(err)
	}
	admin.SetMaxOpenConns(4)
	c.admin = admin
	if err := admin.PingContext(context.Background()); err != nil {
		t.Fatalf("connecting to the cluster: %v", err)
	}
	var fsync, syncCommit string
	if err := admin.QueryRow(`SELECT current_setting('fsync'), current_setting('synchronous_commit')`).Scan(&fsync, &syncCommit); err != nil {
		t.Fatal(err)
	}
	if fsync != "on" || syncCommit != "on" {
		t.Fatalf("the cluster runs with fsync=%s synchronous_commit=%s; want both on", fsync, syncCommit)
	}
	t.Logf("PostgreSQL from %s on 127.0.0.1:%d (fsync=%s, synchronous_commit=%s)", bin, c.port, fsync, syncCommit)
	return c
}

func (c *pgCluster) data() string    { return filepath.Join(c.dir, "data") }
func (c *pgCluster) logPath() string { return filepath.Join(c.dir, "log") }

func (c *pgCluster) log() string {
	b, _ := os.ReadFile(c.logPath())
	return tail(string(b), 40)
}

// pg runs one of the server binaries, as the postgres user if we are root.
func (c *pgCluster) pg(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.asUser {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

// start starts the server on c.port. fsync, synchronous_commit and
// full_page_writes are PostgreSQL's defaults; they are spelled out so that
// no configuration file can turn them off.
func (c *pgCluster) start() error {
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k '%s' -c max_connections=200 "+
		"-c fsync=on -c synchronous_commit=on -c full_page_writes=on", c.port, c.dir)
	out, err := c.pg("pg_ctl", "-D", c.data(), "-l", c.logPath(), "-w", "-t", "60", "-o", opts, "start")
	if err != nil {
		return fmt.Errorf("pg_ctl start: %v\n%s", err, out)
	}
	return nil
}

// restartImmediate is pg_ctl restart -m immediate: the server stops
// without a checkpoint, as in a crash, and starts again with crash
// recovery (pg_ctl reuses the options it was started with).
func (c *pgCluster) restartImmediate(t *testing.T) {
	t.Helper()
	if out, err := c.pg("pg_ctl", "-D", c.data(), "-l", c.logPath(), "-m", "immediate", "-w", "-t", "60", "restart"); err != nil {
		t.Fatalf("pg_ctl restart -m immediate: %v\n%s\nlog:\n%s", err, out, c.log())
	}
}

// remove stops the server and deletes its directory.
func (c *pgCluster) remove() {
	if c.admin != nil {
		c.admin.Close()
	}
	if _, err := os.Stat(filepath.Join(c.data(), "postmaster.pid")); err == nil {
		_, _ = c.pg("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "-t", "60", "stop")
	}
	_ = os.RemoveAll(c.dir)
}

// dsn is the URL of database db on the cluster, with extra parameters
// (run-time settings such as search_path).
func (c *pgCluster) dsn(db string, params url.Values) string {
	q := url.Values{"sslmode": {"disable"}}
	for k, v := range params {
		q[k] = v
	}
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: fmt.Sprintf("127.0.0.1:%d", c.port), Path: "/" + db, RawQuery: q.Encode()}
	return u.String()
}

// newSchema creates an empty schema and returns a DSN whose search_path
// puts everything there.
func (c *pgCluster) newSchema(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "faults_" + hex.EncodeToString(b)
	if _, err := c.admin.Exec(`CREATE SCHEMA ` + name); err != nil {
		t.Fatalf("creating schema: %v", err)
	}
	return c.dsn("postgres", url.Values{"search_path": {name}})
}

// setReadOnly makes the server refuse writes in every session that does
// not override default_transaction_read_only (on), or accept them again
// (off). It returns once a session that was open before the change has
// taken it: PostgreSQL signals every backend at once, and a backend applies
// a reload before it runs its next command.
func (c *pgCluster) setReadOnly(t *testing.T, on bool) {
	t.Helper()
	ctx := context.Background()
	probe, err := pgx.Connect(ctx, c.dsn("postgres", nil))
	if err != nil {
		t.Fatalf("connecting the probe: %v", err)
	}
	defer probe.Close(ctx)
	stmt, want := `ALTER SYSTEM RESET default_transaction_read_only`, "off"
	if on {
		stmt, want = `ALTER SYSTEM SET default_transaction_read_only = on`, "on"
	}
	if _, err := c.admin.Exec(stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
	if _, err := c.admin.Exec(`SELECT pg_reload_conf()`); err != nil {
		t.Fatalf("pg_reload_conf: %v", err)
	}
	waitFor(t, 10*time.Second, "the server to take default_transaction_read_only="+want, func() bool {
		var got string
		err := probe.QueryRow(ctx, `SHOW default_transaction_read_only`).Scan(&got)
		return err == nil && got == want
	})
}

// upPoller connects to the server every 10 ms from its start, and records
// when the server first refused a connection and when it first accepted
// one again after that.
type upPoller struct {
	mu         sync.Mutex
	downAt     time.Time
	upAt       time.Time
	done, stop chan struct{}
}

func (c *pgCluster) pollUp() *upPoller {
	p := &upPoller{done: make(chan struct{}), stop: make(chan struct{})}
	dsn := c.dsn("postgres", url.Values{"connect_timeout": {"1"}})
	go func() {
		defer close(p.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn, err := pgx.Connect(ctx, dsn)
			if err == nil {
				err = conn.Ping(ctx)
				conn.Close(ctx)
			}
			cancel()
			now := time.Now()
			p.mu.Lock()
			switch {
			case err != nil && p.downAt.IsZero():
				p.downAt = now
			case err == nil && !p.downAt.IsZero():
				p.upAt = now
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// times returns when the server went down and came back; zero times if
// the poller has not seen that.
func (p *upPoller) times() (down, up time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.downAt, p.upAt
}

func (p *upPoller) close() {
	select {
	case <-p.done:
	default:
		close(p.stop)
		<-p.done
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond every 20 ms until it holds, and fails the test if it
// does not within d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(d, cond) {
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}

// poll polls cond every 20 ms until it holds or d has passed, and reports
// whether it held.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
