package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// start runs the server with args and env until the test ends, and
// returns its base URL and what it printed.
func start(t *testing.T, args []string, env map[string]string) (string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	addr, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- run(ctx, args, envMap(env), &stdout, &stderr, func(a string) { addr <- a }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("run did not return after its context was cancelled")
		}
	})
	select {
	case a := <-addr:
		return "http://" + a, &stdout
	case err := <-done:
		t.Fatalf("run returned early: %v\n%s", err, stderr.String())
		return "", nil
	}
}

var phones atomic.Int64

// send makes a Kaleyra-style Send to a new recipient with key and returns
// the status.
func send(t *testing.T, base, key string) int {
	t.Helper()
	to := fmt.Sprintf("+479%07d", phones.Add(1))
	req, _ := http.NewRequest("POST", base+"/v1/demo/verify", strings.NewReader(`{"to":{"mobile":"`+to+`"}}`))
	req.Header.Set("api-key", key)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

var exportedKey = regexp.MustCompile(`export API_KEY=(\S+)`)

// TestGeneratedKeysAreKept: the keys a server on a SQLite file makes up at
// its first start are kept beside the database (0600) and used again at
// the next start, so the keys a user exported keep working; they are
// printed only when first made up.
func TestGeneratedKeysAreKept(t *testing.T) {
	dir := t.TempDir()
	args := []string{"-addr", "127.0.0.1:0", "-db", "sqlite:" + filepath.Join(dir, "v.db")}

	base, out := start(t, args, nil)
	m := exportedKey.FindStringSubmatch(out.String())
	require.NotNil(t, m, "the first start prints the key it made up:\n%s", out)
	key := m[1]
	assert.Equal(t, http.StatusOK, send(t, base, key))
	fi, err := os.Stat(filepath.Join(dir, "v.db.keys"))
	require.NoError(t, err, "the keys are kept beside the database")
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	base2, out2 := start(t, args, nil) // a restart (a second instance on the file, here)
	assert.NotContains(t, out2.String(), "export API_KEY=", "a kept key is not printed again")
	assert.Contains(t, out2.String(), "v.db.keys")
	assert.Equal(t, http.StatusOK, send(t, base2, key), "the exported key still works")

	// A key from the environment wins, and is never stored.
	base3, out3 := start(t, args, map[string]string{"VERIFY_API_KEY": "chosen-key"})
	assert.Equal(t, http.StatusOK, send(t, base3, "chosen-key"))
	assert.Equal(t, http.StatusUnauthorized, send(t, base3, key))
	assert.NotContains(t, out3.String(), "chosen-key")
	b, err := os.ReadFile(filepath.Join(dir, "v.db.keys"))
	require.NoError(t, err)
	assert.NotContains(t, string(b), "chosen-key")
}

// TestMemstoreDatabase: -db memstore runs on an in-memory store.
func TestMemstoreDatabase(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	base, out := start(t, []string{"-addr", "127.0.0.1:0", "-db", "memstore"}, map[string]string{"VERIFY_API_KEY": "k"})
	assert.Contains(t, out.String(), "database: memstore")
	assert.Equal(t, http.StatusOK, send(t, base, "k"))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing is written to disk")
}
