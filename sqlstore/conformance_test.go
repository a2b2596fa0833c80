package sqlstore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
	"github.com/openverify/verify/storetest"
)

func TestConformanceSQLiteFile(t *testing.T) {
	storetest.Run(t, func(t *testing.T) verify.Store {
		return open(t, "sqlite:"+filepath.Join(t.TempDir(), "verify.db"))
	})
}

// TestConformanceSQLiteMemory runs the suite on an in-memory database made
// with New rather than Open. A :memory: database lives and dies with its
// connection, so the pool must hold exactly one connection that is never
// closed while idle.
func TestConformanceSQLiteMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) verify.Store {
		db, err := sql.Open("sqlite", ":memory:?_pragma=foreign_keys(1)")
		require.NoError(t, err)
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { db.Close() })
		st, err := sqlstore.New(db, sqlstore.SQLite)
		require.NoError(t, err)
		require.NoError(t, st.Migrate(context.Background()))
		return st
	})
}

func TestConformancePostgres(t *testing.T) {
	postgresDSN(t)
	storetest.Run(t, func(t *testing.T) verify.Store {
		return open(t, freshSchema(t))
	})
}
