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

func TestListStatsAndCSV(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	var ids []string
	for i := range 7 {
		to := verify.Recipient{Phone: fmt.Sprintf("+474000000%d", i), Email: fmt.Sprintf("user%d@example.com", i)}
		v, err := h.eng.Send(h.ctx, verify.SendRequest{To: to, ForeignID: fmt.Sprint("f", i)})
		require.NoError(t, err)
		ids = append(ids, v.ID)
		m, _ := h.sms.Last()
		h.clock.Add(10 * time.Second)
		if i%2 == 0 {
			_, err = h.check(v.ID, m.Code)
			require.NoError(t, err)
		}
	}
	page, err := h.eng.List(h.ctx, verify.Query{Limit: 3})
	require.NoError(t, err)
	require.Len(t, page.Verifications, 3)
	assert.Equal(t, ids[6], page.Verifications[0].ID, "newest first")
	var all []string
	q := verify.Query{Limit: 3}
	for {
		p, err := h.eng.List(h.ctx, q)
		require.NoError(t, err)
		for _, v := range p.Verifications {
			all = append(all, v.ID)
		}
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	assert.Equal(t, []string{ids[6], ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]}, all)

	verified, err := h.eng.List(h.ctx, verify.Query{Statuses: []verify.Status{verify.StatusVerified}})
	require.NoError(t, err)
	assert.Len(t, verified.Verifications, 4)

	st, err := h.eng.Stats(h.ctx, verify.Query{})
	require.NoError(t, err)
	assert.Equal(t, 7, st.Total)
	assert.Equal(t, 7, st.Sent)
	assert.Equal(t, 4, st.Verified)
	assert.InDelta(t, 4.0/7.0, st.Conversion, 1e-9)
	assert.Equal(t, 10*time.Second, st.MedianTimeToVerify)
	assert.Equal(t, 7, st.Channels["sms"].Sent)
	assert.Equal(t, map[verify.Status]int{verify.StatusVerified: 4, verify.StatusSent: 3}, st.ByStatus)

	var buf bytes.Buffer
	require.NoError(t, h.eng.WriteCSV(h.ctx, &buf, verify.Query{}, verify.CSVOptions{}))
	rows, err := csv.NewReader(&buf).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 8)
	assert.Equal(t, verify.CSVHeader, rows[0])
	assert.Equal(t, "+47******06", rows[1][4], "phones are masked by default")
	assert.Equal(t, "u***@example.com", rows[1][5], "emails are masked by default")
	assert.Equal(t, "verified", rows[1][3])
	buf.Reset()
	require.NoError(t, h.eng.WriteCSV(h.ctx, &buf, verify.Query{FlowID: "none"}, verify.CSVOptions{Unmasked: true}))
	rows, _ = csv.NewReader(&buf).ReadAll()
	assert.Len(t, rows, 1, "header only")

	_, err = h.eng.List(h.ctx, verify.Query{Cursor: "garbage"})
	requireCode(t, err, verify.ErrInvalidParameter)
	_, err = h.eng.List(h.ctx, verify.Query{Limit: 5000})
	requireCode(t, err, verify.ErrInvalidParameter)
	_, err = h.eng.Stats(h.ctx, verify.Query{Statuses: []verify.Status{"gone"}})
	requireCode(t, err, verify.ErrInvalidParameter)
}

func TestMaskRecipient(t *testing.T) {
	assert.Equal(t, verify.Recipient{Phone: "+47******78", Email: "a***@example.com"},
		verify.MaskRecipient(verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"}))
	assert.Equal(t, verify.Recipient{Phone: "***"}, verify.MaskRecipient(verify.Recipient{Phone: "+47"}))
	assert.Equal(t, verify.Recipient{}, verify.MaskRecipient(verify.Recipient{}))
}
