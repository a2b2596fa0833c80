package httpapi

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// recentRows is how many verifications the overview lists.
const recentRows = 25

// overviewRange is a range the overview offers: how far back from now, in
// buckets of what size.
type overviewRange struct {
	Key, Label string
	Buckets    int
	Bucket     time.Duration
}

var overviewRanges = []overviewRange{
	{"24h", "Last 24 hours", 24, time.Hour},
	{"7d", "Last 7 days", 7, 24 * time.Hour},
	{"30d", "Last 30 days", 30, 24 * time.Hour},
}

type overviewData struct {
	Notice   string
	Range    string
	Ranges   []overviewRange
	FlowID   string
	Flows    []verify.Flow
	From, To time.Time
	Stats    verify.Stats
	Charts   overviewCharts
	Channels []channelRow
	Statuses []statusRow
	Recent   []recentRow
	CSV      string
}

type channelRow struct {
	Name string
	verify.ChannelStats
}

type statusRow struct {
	Status verify.Status
	Count  int
}

type recentRow struct {
	ID, Flow, Created, Recipient, Channels string
	Status                                 verify.Status
	Attempts                               int
}

// overviewPage renders the console's overview for a range (the last 24
// hours by hour, the last 7 or 30 days by day; "range") and a flow
// ("flow_id", all by default): the totals, the charts, the figures by
// channel and by status, and the most recent verifications with masked
// recipients.
func (s *server) overviewPage(w http.ResponseWriter, r *http.Request, c consoleReq) {
	ctx := r.Context()
	v := r.URL.Query()
	rg := overviewRanges[0]
	if k := v.Get("range"); k != "" {
		i := slices.IndexFunc(overviewRanges, func(o overviewRange) bool { return o.Key == k })
		if i < 0 {
			s.render(w, r, http.StatusBadRequest, "error", c, consolePage{Title: "Bad request", Data: "range must be one of 24h, 7d or 30d."})
			return
		}
		rg = overviewRanges[i]
	}
	// Whole buckets, the current one last.
	to := s.eng.Now().Truncate(rg.Bucket).Add(rg.Bucket)
	from := to.Add(-time.Duration(rg.Buckets) * rg.Bucket)
	q := verify.Query{From: from, To: to, FlowID: v.Get("flow_id")}
	data := overviewData{Range: rg.Key, Ranges: overviewRanges, FlowID: q.FlowID, From: from, To: to}
	csv := url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
	if q.FlowID != "" {
		csv.Set("flow_id", q.FlowID)
	}
	data.CSV = "/admin/report.csv?" + csv.Encode()

	flows, err := s.eng.Flows(ctx)
	if err != nil {
		s.engineError(w, r, c, err)
		return
	}
	data.Flows = flows
	// One aggregate serves the page: the trends carry the totals, the
	// statuses and the channels too.
	tr, err := s.eng.Trends(ctx, verify.TrendQuery{Query: q, Bucket: rg.Bucket})
	if errors.Is(err, verify.ErrTrendsUnsupported) {
		data.Notice = "This store does not support trends (verify.TrendStore), so there is nothing to show."
		s.render(w, r, http.StatusOK, "overview", c, consolePage{Title: "Overview", Nav: "overview", Data: data})
		return
	} else if err != nil {
		s.engineError(w, r, c, err)
		return
	}
	st := verify.Stats{ByStatus: tr.ByStatus, Channels: tr.Channels, MedianTimeToVerify: tr.TimeToVerify50}
	for _, b := range tr.Buckets {
		st.Total += b.Created
		st.Sent += b.Sent
		st.Verified += b.Verified
	}
	if st.Sent > 0 {
		st.Conversion = float64(st.Verified) / float64(st.Sent)
	}
	data.Stats = st
	refusals, err := s.eng.Refusals(ctx, from, to)
	if err != nil && !errors.Is(err, verify.ErrListingUnsupported) {
		s.engineError(w, r, c, err)
		return
	}
	data.Charts = chartsOf(tr, st, refusals, rg.Bucket)
	for name, c := range st.Channels {
		data.Channels = append(data.Channels, channelRow{name, c})
	}
	slices.SortFunc(data.Channels, func(a, b channelRow) int { return strings.Compare(a.Name, b.Name) })
	for status, n := range st.ByStatus {
		data.Statuses = append(data.Statuses, statusRow{status, n})
	}
	slices.SortFunc(data.Statuses, func(a, b statusRow) int { return strings.Compare(string(a.Status), string(b.Status)) })

	rq := q
	rq.Limit = recentRows
	page, err := s.eng.List(ctx, rq)
	if err != nil {
		s.engineError(w, r, c, err)
		return
	}
	names := flowNames(flows)
	for _, vr := range page.Verifications {
		data.Recent = append(data.Recent, rowOf(vr, names, false))
	}
	s.render(w, r, http.StatusOK, "overview", c, consolePage{Title: "Overview", Nav: "overview", Data: data})
}
