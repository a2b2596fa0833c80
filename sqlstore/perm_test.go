package sqlstore_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify/sqlstore"
)

// TestSQLiteFilesArePrivate: Open creates a new SQLite database, and the
// WAL beside it, readable by its owner only: they hold phone numbers and
// e-mail addresses. An existing file keeps its permissions.
func TestSQLiteFilesArePrivate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, dsn := range []string{"sqlite:" + filepath.Join(dir, "a.db"), "file:" + filepath.Join(dir, "b.db") + "?_pragma=busy_timeout(100)"} {
		st, err := sqlstore.Open(ctx, dsn)
		require.NoError(t, err, dsn)
		_, err = st.DB().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS t (x INTEGER)`)
		require.NoError(t, err)
		path, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:"), "?")
		fi, err := os.Stat(path + "-wal")
		require.NoError(t, err, "the WAL exists while the database is open")
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the WAL of %s", path)
		require.NoError(t, st.Close())
	}
	for _, name := range []string{"a.db", "b.db"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), name)
	}

	shared := filepath.Join(dir, "shared.db")
	require.NoError(t, os.WriteFile(shared, nil, 0o640))
	st, err := sqlstore.Open(ctx, "sqlite:"+shared)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	fi, err := os.Stat(shared)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm(), "an existing file keeps its permissions")

	st, err = sqlstore.Open(ctx, "sqlite::memory:")
	require.NoError(t, err, "in memory: no file")
	require.NoError(t, st.Close())
	_, err = os.Stat(":memory:")
	assert.True(t, os.IsNotExist(err), "no file named :memory:")
}
