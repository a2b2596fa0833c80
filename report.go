package verify

import (
	"context"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Query selects verifications for List, Stats and WriteCSV. Zero fields
// select everything.
type Query struct {
	// From and To bound CreatedAt: From <= CreatedAt < To.
	From, To time.Time
	// Statuses keeps verifications in any of these statuses.
	Statuses []Status
	FlowID   string
	// Channel keeps verifications with a delivery on this channel.
	Channel   string
	ForeignID string
	// Recipient keeps verifications sent to this phone number (E.164) or
	// email address.
	Recipient string
	// Limit is List's page size, 1..1000. Defaults to 50.
	Limit int
	// Cursor continues a List from the previous Page's Next.
	Cursor string
}

// Page is one page of List's results, newest first.
type Page struct {
	Verifications []Verification `json:"verifications"`
	// Next is the Cursor of the following page; "" on the last page.
	Next string `json:"next,omitempty"`
}

// Stats summarises the verifications a Query selects.
type Stats struct {
	// Total is how many verifications were created.
	Total    int            `json:"total"`
	ByStatus map[Status]int `json:"by_status"`
	// Sent counts verifications with at least one successful delivery;
	// Verified those verified. Conversion is Verified / Sent (0 if none).
	Sent       int     `json:"sent"`
	Verified   int     `json:"verified"`
	Conversion float64 `json:"conversion"`
	// MedianTimeToVerify is the median of VerifiedAt - CreatedAt.
	MedianTimeToVerify time.Duration `json:"median_time_to_verify"`
	// Channels and Flows break the figures down by channel and flow.
	Channels map[string]ChannelStats `json:"channels"`
	Flows    map[string]FlowStats    `json:"flows"`
}

// ChannelStats are one channel's figures. Sent, Delivered and Failed count
// deliveries by their status; Verifications counts verifications with a
// successful delivery on the channel and Verified those of them verified;
// Conversion is Verified / Verifications.
type ChannelStats struct {
	Deliveries    int     `json:"deliveries"`
	Sent          int     `json:"sent"`
	Delivered     int     `json:"delivered"`
	Failed        int     `json:"failed"`
	Verifications int     `json:"verifications"`
	Verified      int     `json:"verified"`
	Conversion    float64 `json:"conversion"`
}

// FlowStats are one flow's figures, as in Stats.
type FlowStats struct {
	Total              int           `json:"total"`
	Sent               int           `json:"sent"`
	Verified           int           `json:"verified"`
	Conversion         float64       `json:"conversion"`
	MedianTimeToVerify time.Duration `json:"median_time_to_verify"`
}

// Cursor is a position in List's order (CreatedAt descending, then ID
// descending): the last row of the previous page.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// ReportStore is the optional Store ability behind List, Stats and
// WriteCSV. memstore and sqlstore have it; the engine answers
// ErrReportsUnsupported for stores that do not.
type ReportStore interface {
	// ListVerifications returns up to limit verifications matching q
	// (ignoring q.Limit and q.Cursor), newest CreatedAt first, ties by ID
	// descending, strictly after the cursor position when after.ID is not
	// empty. Deliveries are filled in.
	ListVerifications(ctx context.Context, q Query, after Cursor, limit int) ([]VerificationRecord, error)
	// Stats computes the summary of the verifications matching q (ignoring
	// q.Limit and q.Cursor) without loading them all into memory where the
	// store can avoid it (SQL aggregates).
	Stats(ctx context.Context, q Query) (Stats, error)
}

// ErrReportsUnsupported is returned by List, Stats and WriteCSV when the
// Store does not implement ReportStore.
var ErrReportsUnsupported = errors.New("verify: the store does not implement verify.ReportStore (use memstore or sqlstore)")

const (
	defaultPageSize = 50
	maxPageSize     = 1000
)

func (e *Engine) reports() (ReportStore, error) {
	rs, ok := e.store.(ReportStore)
	if !ok {
		return nil, ErrReportsUnsupported
	}
	return rs, nil
}

func (q *Query) validate() error {
	if q.Limit == 0 {
		q.Limit = defaultPageSize
	}
	if q.Limit < 1 || q.Limit > maxPageSize {
		return invalid(ErrInvalidParameter, "limit", "limit must be 1 to %d, got %d", maxPageSize, q.Limit)
	}
	for _, s := range q.Statuses {
		if !s.Valid() {
			return invalid(ErrInvalidParameter, "status", "unknown status %q", s)
		}
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		return invalid(ErrInvalidParameter, "from", "from must be before to")
	}
	return nil
}

// List returns a page of verifications matching q, newest first, with
// their deliveries. Pass the returned Next as q.Cursor for the next page.
// Recipients are returned as stored; mask them with MaskRecipient for
// display.
func (e *Engine) List(ctx context.Context, q Query) (Page, error) {
	rs, err := e.reports()
	if err != nil {
		return Page{}, err
	}
	if err := q.validate(); err != nil {
		return Page{}, err
	}
	after, err := decodeCursor(q.Cursor)
	if err != nil {
		return Page{}, err
	}
	recs, err := rs.ListVerifications(ctx, q, after, q.Limit+1)
	if err != nil {
		return Page{}, storeErr(ctx, "list verifications", err)
	}
	page := Page{Verifications: make([]Verification, 0, min(len(recs), q.Limit))}
	for i := range recs {
		if i == q.Limit {
			last := recs[i-1]
			page.Next = encodeCursor(Cursor{CreatedAt: last.CreatedAt, ID: last.ID})
			break
		}
		page.Verifications = append(page.Verifications, recs[i].public())
	}
	return page, nil
}

// Stats returns counts by status and channel, the conversion rate
// (verified / sent) and the median time to verify, overall, per channel and
// per flow, for the verifications matching q. The store computes them.
func (e *Engine) Stats(ctx context.Context, q Query) (Stats, error) {
	rs, err := e.reports()
	if err != nil {
		return Stats{}, err
	}
	q.Limit, q.Cursor = 0, ""
	if err := q.validate(); err != nil {
		return Stats{}, err
	}
	st, err := rs.Stats(ctx, q)
	return st, storeErr(ctx, "stats", err)
}

// CSVOptions tune WriteCSV.
type CSVOptions struct {
	// Unmasked writes recipients in full. By default they are masked
	// (+47******78, a***@example.com).
	Unmasked bool
}

// CSVHeader is the header row WriteCSV writes.
var CSVHeader = []string{"id", "flow_id", "foreign_id", "status", "mobile", "email", "channels",
	"attempts", "sends", "created_at", "expires_at", "verified_at"}

// WriteCSV streams the verifications matching q (all pages, newest first)
// to w as CSV with the CSVHeader columns, a page at a time.
//
// The file is meant to be opened in spreadsheets, so every cell that holds
// text the engine did not produce itself (IDs, foreign ID, recipients,
// channel names) is neutralised against CSV/formula injection: control
// characters and Unicode bidirectional controls are removed, and a cell that
// then starts with '=', '+', '-', '@', tab or carriage return gets a leading
// "'". A phone that is a valid E.164 number keeps its leading "+" (masked or
// not); counts, timestamps and the status are written as they are.
func (e *Engine) WriteCSV(ctx context.Context, w io.Writer, q Query, opts CSVOptions) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	q.Limit = maxPageSize
	for {
		page, err := e.List(ctx, q)
		if err != nil {
			return err
		}
		for _, v := range page.Verifications {
			to := v.To
			if !opts.Unmasked {
				to = MaskRecipient(to)
			}
			var chans []string
			for _, d := range v.Deliveries {
				if !contains(chans, d.Channel) {
					chans = append(chans, d.Channel)
				}
			}
			phone := csvSafe(to.Phone)
			if isCSVPhone(v.To.Phone) {
				phone = to.Phone // masked or not, derived from a valid E.164 number
			}
			rec := []string{csvSafe(v.ID), csvSafe(v.FlowID), csvSafe(v.ForeignID), string(v.Status),
				phone, csvSafe(to.Email), csvSafe(strings.Join(chans, " ")),
				strconv.Itoa(v.Attempts), strconv.Itoa(v.Sends), v.CreatedAt.Format(time.RFC3339),
				v.ExpiresAt.Format(time.RFC3339), formatTime(v.VerifiedAt)}
			if err := cw.Write(rec); err != nil {
				return err
			}
		}
		cw.Flush()
		if err := cw.Error(); err != nil {
			return err
		}
		if page.Next == "" {
			return nil
		}
		q.Cursor = page.Next
	}
}

// csvSafe neutralises a free-text CSV cell (anything a caller, user or
// provider can put text into) before it reaches a spreadsheet, following
// the OWASP advice on CSV injection. Spreadsheets evaluate a cell starting
// with '=', '+', '-' or '@' as a formula (=HYPERLINK(...) exfiltrates data,
// =cmd|'...'!A0 runs commands through DDE), and some strip a leading tab or
// CR before doing so; such a cell is prefixed with "'", which makes it text.
// Before that check, C0 controls other than tab, LF and CR (which the CSV
// writer quotes and which can be legitimate in text), DEL, C1 controls and
// the Unicode bidirectional marks, embeddings, overrides and isolates
// (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) are removed: NUL
// truncates cells in some readers and bidi controls make a cell display
// differently from what it contains. Invalid UTF-8 becomes U+FFFD.
func csvSafe(s string) string {
	if needsCSVClean(s) {
		s = strings.Map(func(r rune) rune {
			if csvStrip(r) {
				return -1
			}
			return r
		}, s)
	}
	if s != "" {
		switch s[0] {
		case '=', '+', '-', '@', '\t', '\r':
			return "'" + s
		}
	}
	return s
}

// needsCSVClean reports whether s has a rune csvSafe removes or invalid
// UTF-8, sparing the copy for the common clean cell.
func needsCSVClean(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || csvStrip(r) {
			return true
		}
	}
	return false
}

// csvStrip reports whether csvSafe removes r.
func csvStrip(r rune) bool {
	switch {
	case r < 0x20:
		return r != '\t' && r != '\n' && r != '\r'
	case r >= 0x7F && r <= 0x9F: // DEL and C1 controls
		return true
	case r == 0x061C, r == 0x200E, r == 0x200F, // ALM, LRM, RLM
		r >= 0x202A && r <= 0x202E, // LRE, RLE, PDF, LRO, RLO
		r >= 0x2066 && r <= 0x2069: // LRI, RLI, FSI, PDI
		return true
	}
	return false
}

// isCSVPhone reports whether s is an E.164 number, ^\+[1-9][0-9]{1,14}$,
// which WriteCSV writes with its leading "+" rather than as free text.
func isCSVPhone(s string) bool {
	if len(s) < 3 || len(s) > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9' {
		return false
	}
	for i := 2; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339)
}

// MaskRecipient hides most of a recipient for display: a phone keeps its
// "+", first two and last two digits (+47******78); an email keeps the first
// letter of the local part and the domain (a***@example.com).
func MaskRecipient(r Recipient) Recipient {
	if n := len(r.Phone); n > 0 {
		if n <= 5 {
			r.Phone = strings.Repeat("*", n)
		} else {
			r.Phone = r.Phone[:3] + strings.Repeat("*", n-5) + r.Phone[n-2:]
		}
	}
	if at := strings.LastIndexByte(r.Email, '@'); at > 0 {
		r.Email = r.Email[:1] + "***" + r.Email[at:]
	} else if r.Email != "" {
		r.Email = "***"
	}
	return r
}

func encodeCursor(c Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.CreatedAt.UTC().Format(time.RFC3339Nano) + "|" + c.ID))
}

func decodeCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	bad := invalid(ErrInvalidParameter, "cursor", "cursor is not one that List returned")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, bad
	}
	t, id, ok := strings.Cut(string(b), "|")
	if !ok || id == "" {
		return Cursor{}, bad
	}
	at, err := time.Parse(time.RFC3339Nano, t)
	if err != nil {
		return Cursor{}, bad
	}
	return Cursor{CreatedAt: at, ID: id}, nil
}

// ComputeStats builds Stats from records, for stores that summarise in
// memory (memstore) and for tests of stores that aggregate in SQL.
func ComputeStats(recs []VerificationRecord) Stats {
	st := Stats{ByStatus: map[Status]int{}, Channels: map[string]ChannelStats{}, Flows: map[string]FlowStats{}}
	var all []time.Duration
	perFlow := map[string][]time.Duration{}
	for _, r := range recs {
		st.Total++
		st.ByStatus[r.Status]++
		f := st.Flows[r.FlowID]
		f.Total++
		sent := false
		seen := map[string]bool{}
		for _, d := range r.Deliveries {
			c := st.Channels[d.Channel]
			c.Deliveries++
			switch d.Status {
			case DeliverySent:
				c.Sent++
			case DeliveryDelivered:
				c.Delivered++
			case DeliveryFailed:
				c.Failed++
			}
			if d.Status != DeliveryFailed {
				sent = true
				if !seen[d.Channel] {
					seen[d.Channel] = true
					c.Verifications++
					if r.Status == StatusVerified {
						c.Verified++
					}
				}
			}
			st.Channels[d.Channel] = c
		}
		if sent {
			st.Sent++
			f.Sent++
		}
		if r.Status == StatusVerified {
			st.Verified++
			f.Verified++
			all = append(all, r.VerifiedAt.Sub(r.CreatedAt))
			perFlow[r.FlowID] = append(perFlow[r.FlowID], r.VerifiedAt.Sub(r.CreatedAt))
		}
		st.Flows[r.FlowID] = f
	}
	st.Conversion = ratio(st.Verified, st.Sent)
	st.MedianTimeToVerify = Median(all)
	for k, c := range st.Channels {
		c.Conversion = ratio(c.Verified, c.Verifications)
		st.Channels[k] = c
	}
	for k, f := range st.Flows {
		f.Conversion = ratio(f.Verified, f.Sent)
		f.MedianTimeToVerify = Median(perFlow[k])
		st.Flows[k] = f
	}
	return st
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Median returns the median of ds (the mean of the two middle values for an
// even count), or 0 for none. It sorts ds.
func Median(ds []time.Duration) time.Duration {
	n := len(ds)
	if n == 0 {
		return 0
	}
	slices.Sort(ds)
	if n%2 == 1 {
		return ds[n/2]
	}
	return (ds[n/2-1] + ds[n/2]) / 2
}

// Matches reports whether r is selected by q's filters (not its Limit or
// Cursor), for stores that filter in memory.
func (q Query) Matches(r *VerificationRecord) bool {
	if !q.From.IsZero() && r.CreatedAt.Before(q.From) {
		return false
	}
	if !q.To.IsZero() && !r.CreatedAt.Before(q.To) {
		return false
	}
	if len(q.Statuses) > 0 && !containsStatus(q.Statuses, r.Status) {
		return false
	}
	if q.FlowID != "" && r.FlowID != q.FlowID {
		return false
	}
	if q.ForeignID != "" && r.ForeignID != q.ForeignID {
		return false
	}
	if q.Recipient != "" && r.To.Phone != q.Recipient && r.To.Email != q.Recipient {
		return false
	}
	if q.Channel != "" {
		found := false
		for _, d := range r.Deliveries {
			if d.Channel == q.Channel {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func containsStatus(ss []Status, s Status) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// String describes the query for logs.
func (q Query) String() string {
	return fmt.Sprintf("verify.Query{From:%s To:%s Statuses:%v Flow:%s Channel:%s}", formatTime(q.From), formatTime(q.To), q.Statuses, q.FlowID, q.Channel)
}
