package httpapi

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/openverify/verify"
)

// recentRows is how many verifications the overview lists.
const recentRows = 25

type overviewData struct {
	Notice   string
	Stats    verify.Stats
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

// overviewPage renders the console's overview: totals and conversion per
// channel for the verifications the query selects (all by default; the
// same filters as /admin/stats), and the most recent ones with masked
// recipients.
func (s *server) overviewPage(w http.ResponseWriter, r *http.Request, c consoleReq) {
	ctx := r.Context()
	q, err := parseQuery(r.URL.Query())
	if err != nil {
		s.engineError(w, r, c, err)
		return
	}
	data := overviewData{CSV: "/admin/report.csv"}
	if enc := r.URL.Query(); len(enc) > 0 {
		enc.Del("unmasked")
		enc.Del("limit")
		enc.Del("cursor")
		if e := enc.Encode(); e != "" {
			data.CSV += "?" + e
		}
	}
	st, err := s.eng.Stats(ctx, q)
	if errors.Is(err, verify.ErrReportsUnsupported) {
		data.Notice = "This store does not support reports (verify.ReportStore), so there is nothing to show."
	} else if err != nil {
		s.engineError(w, r, c, err)
		return
	}
	data.Stats = st
	for name, c := range st.Channels {
		data.Channels = append(data.Channels, channelRow{name, c})
	}
	slices.SortFunc(data.Channels, func(a, b channelRow) int { return strings.Compare(a.Name, b.Name) })
	for status, n := range st.ByStatus {
		data.Statuses = append(data.Statuses, statusRow{status, n})
	}
	slices.SortFunc(data.Statuses, func(a, b statusRow) int { return strings.Compare(string(a.Status), string(b.Status)) })

	if data.Notice == "" {
		flowNames := map[string]string{}
		if flows, err := s.eng.Flows(ctx); err == nil {
			for _, f := range flows {
				flowNames[f.ID] = f.Name
			}
		}
		rq := q
		rq.Limit, rq.Cursor = recentRows, ""
		page, err := s.eng.List(ctx, rq)
		if err != nil {
			s.engineError(w, r, c, err)
			return
		}
		for _, v := range page.Verifications {
			to := verify.MaskRecipient(v.To)
			var chans []string
			for _, d := range v.Deliveries {
				if !slices.Contains(chans, d.Channel) {
					chans = append(chans, d.Channel)
				}
			}
			flow := flowNames[v.FlowID]
			if flow == "" {
				flow = v.FlowID
			}
			data.Recent = append(data.Recent, recentRow{
				ID: v.ID, Flow: flow, Status: v.Status, Attempts: v.Attempts,
				Created:   v.CreatedAt.UTC().Format("2006-01-02 15:04:05"),
				Recipient: strings.TrimSpace(to.Phone + " " + to.Email),
				Channels:  strings.Join(chans, ", "),
			})
		}
	}

	s.render(w, r, http.StatusOK, "overview", c, consolePage{Title: "Overview", Nav: "overview", Data: data})
}
