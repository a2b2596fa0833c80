package sqlstore_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
)

// TestNoPlainCodeAtRest sends codes (one verification still open with a
// pending fallback, so its sealed code is kept; one verified; one
// resent), then dumps every column of every row of every table, as text
// and, for blobs, as hex too, and looks for the codes. On SQLite it also
// searches the raw database and WAL files.
func TestNoPlainCodeAtRest(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := b.newDSN(t)
			// Ten alphanumeric characters: no chance of turning up by
			// accident in a hex digest, a UUID or a timestamp.
			flow := fallbackFlow
			flow.CodeLength, flow.Charset = 10, verify.Alphanumeric
			c := newCluster(t, dsn, 1, flow)
			eng := c.engine(0)

			var codes []string
			var ids []string
			for range 3 {
				v, err := eng.Send(ctx, verify.SendRequest{To: someone()})
				require.NoError(t, err)
				msgs := c.sms.sent(v.ID)
				require.Len(t, msgs, 1)
				codes = append(codes, msgs[0].Code)
				ids = append(ids, v.ID)
			}
			_, err := eng.Check(ctx, verify.CheckRequest{VerifyID: ids[1], Code: codes[1]})
			require.NoError(t, err)
			c.clk.Add(31 * time.Second) // past the resend cooldown
			_, err = eng.Resend(ctx, ids[2])
			require.NoError(t, err)
			_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: ids[2], Code: "WRONGCODE2"})
			require.ErrorIs(t, err, verify.ErrInvalidOTP)

			dump := dumpTables(t, c.inst[0].store)
			// The dump does show what is stored: IDs as text, hashes and
			// sealed codes as hex.
			rec, err := c.inst[0].store.GetVerification(ctx, ids[0])
			require.NoError(t, err)
			require.NotEmpty(t, rec.SealedCode, "an open verification with a pending fallback keeps its sealed code")
			require.Contains(t, dump, ids[0])
			require.Contains(t, dump, hex.EncodeToString(rec.CodeHash))
			require.Contains(t, dump, hex.EncodeToString(rec.SealedCode))
			for _, code := range codes {
				assert.NotContains(t, strings.ToUpper(dump), code, "a plain code is in the database dump")
				assert.NotContains(t, strings.ToUpper(dump), hex.EncodeToString([]byte(code)), "a hex-encoded code is in the dump")
			}

			if b.name == "sqlite" {
				path := strings.TrimPrefix(dsn, "sqlite:")
				for _, f := range []string{path, path + "-wal"} {
					raw, err := os.ReadFile(f)
					if os.IsNotExist(err) {
						continue
					}
					require.NoError(t, err)
					for _, code := range codes {
						assert.False(t, bytes.Contains(raw, []byte(code)), "a plain code is in %s", filepath.Base(f))
					}
				}
			}
		})
	}
}

// dumpTables renders every row of every table of the store's schema as
// "table: col=value col=value", blobs as text and as hex.
func dumpTables(t *testing.T, st *sqlstore.Store) string {
	t.Helper()
	db := st.DB()
	var list string
	if st.Dialect() == sqlstore.Postgres {
		list = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1`
	} else {
		list = `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1`
	}
	tables := queryStrings(t, db, list)
	require.Contains(t, tables, "verifications")
	var out strings.Builder
	for _, table := range tables {
		rows, err := db.Query(`SELECT * FROM ` + table)
		require.NoError(t, err)
		cols, err := rows.Columns()
		require.NoError(t, err)
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			require.NoError(t, rows.Scan(ptrs...))
			out.WriteString(table + ":")
			for i, v := range vals {
				switch x := v.(type) {
				case []byte:
					fmt.Fprintf(&out, " %s=%q hex:%x", cols[i], x, x)
				default:
					fmt.Fprintf(&out, " %s=%v", cols[i], x)
				}
			}
			out.WriteString("\n")
		}
		require.NoError(t, rows.Err())
		rows.Close()
	}
	return out.String()
}

func queryStrings(t *testing.T, db *sql.DB, query string) []string {
	t.Helper()
	rows, err := db.Query(query)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}
