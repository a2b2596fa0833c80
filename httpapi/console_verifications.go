package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// The console's verifications: a search (recipient, foreign ID, status,
// flow, dates) with pages, and one verification's timeline with the
// actions the engine allows on it (resend, cancel). Recipients are masked
// unless the operator asks to see them.

// consolePageSize is how many verifications a search page lists.
const consolePageSize = 50

// searchData is the search page's.
type searchData struct {
	Form     url.Values
	Flows    []verify.Flow
	Statuses []verify.Status
	Rows     []recentRow
	// Next links to the following page; "" on the last.
	Next     string
	Unmasked bool
	Error    string
	Notice   string
}

// Get is the text of search field name.
func (d searchData) Get(name string) string { return d.Form.Get(name) }

// HasStatus reports whether the search asks for status st.
func (d searchData) HasStatus(st verify.Status) bool {
	return slices.Contains(d.Form["status"], string(st))
}

var allStatuses = []verify.Status{verify.StatusPending, verify.StatusSent, verify.StatusDelivered, verify.StatusVerified,
	verify.StatusExpired, verify.StatusCanceled, verify.StatusMaxAttempts, verify.StatusFailed}

// verificationsPage searches verifications, newest first.
func (s *server) verificationsPage(w http.ResponseWriter, r *http.Request, c consoleReq) {
	ctx := r.Context()
	v := r.URL.Query()
	data := searchData{Form: v, Statuses: allStatuses, Unmasked: unmasked(v)}
	flows, err := s.eng.Flows(ctx)
	if err != nil {
		s.engineError(w, r, c, err)
		return
	}
	data.Flows = flows
	q, err := consoleQuery(v)
	status := http.StatusOK
	if err != nil {
		ve, ok := s.refusal(w, r, c, err)
		if !ok {
			return
		}
		data.Error, status = ve.Message, ve.HTTPStatus()
		s.render(w, r, status, "verifications", c, consolePage{Title: "Verifications", Nav: "verifications", Data: data})
		return
	}
	q.Limit = consolePageSize
	page, err := s.eng.List(ctx, q)
	switch {
	case errors.Is(err, verify.ErrReportsUnsupported):
		data.Notice = "This store does not support reports (verify.ReportStore), so verifications cannot be searched."
	case err != nil:
		ve, ok := s.refusal(w, r, c, err)
		if !ok {
			return
		}
		data.Error, status = ve.Message, ve.HTTPStatus()
	default:
		if data.Unmasked {
			s.audit(r, c.who, "verifications.reveal", "", revealDetail(v))
		}
		names := flowNames(flows)
		for _, vr := range page.Verifications {
			data.Rows = append(data.Rows, rowOf(vr, names, data.Unmasked))
		}
		if page.Next != "" {
			data.Next = pageLink("verifications", v, "cursor", page.Next)
		}
	}
	s.render(w, r, status, "verifications", c, consolePage{Title: "Verifications", Nav: "verifications", Data: data})
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// flowNames maps flow IDs to names.
func flowNames(flows []verify.Flow) map[string]string {
	m := make(map[string]string, len(flows))
	for _, f := range flows {
		m[f.ID] = f.Name
	}
	return m
}

// rowOf is a verification as a list row, its recipient masked unless
// unmasked.
func rowOf(v verify.Verification, flowNames map[string]string, unmasked bool) recentRow {
	to := v.To
	if !unmasked {
		to = verify.MaskRecipient(to)
	}
	var chans []string
	for _, d := range v.Deliveries {
		if !slices.Contains(chans, d.Channel) {
			chans = append(chans, d.Channel)
		}
	}
	flow := cmp.Or(flowNames[v.FlowID], v.FlowID)
	return recentRow{
		ID: v.ID, Flow: flow, Status: v.Status, Attempts: v.Attempts,
		Created:   v.CreatedAt.UTC().Format("2006-01-02 15:04:05"),
		Recipient: strings.TrimSpace(to.Phone + " " + to.Email),
		Channels:  strings.Join(chans, ", "),
	}
}

// consoleQuery reads the search form: the admin API's filters, with From
// and To also as dates (From a day from its start, To up to its end, in
// UTC), as a date field sends them.
func consoleQuery(v url.Values) (verify.Query, error) {
	v = cloneValues(v)
	for _, name := range []string{"from", "to"} {
		d := strings.TrimSpace(v.Get(name))
		if d == "" {
			v.Del(name)
			continue
		}
		day, err := time.Parse(time.DateOnly, d)
		if err != nil {
			continue // parseQuery reads it as RFC 3339, or says what is wrong
		}
		if name == "to" {
			day = day.AddDate(0, 0, 1)
		}
		v.Set(name, day.Format(time.RFC3339))
	}
	for _, name := range []string{"recipient", "foreign_id"} {
		v.Set(name, strings.TrimSpace(v.Get(name)))
	}
	v.Del("limit")
	return parseQuery(v)
}

// timelineEntry is one event of a verification's life.
type timelineEntry struct {
	At   time.Time
	Kind string // created, sent, receipt, check, ended
	Text string
	// Bad marks a failure: a failed delivery, a wrong code, an ending
	// other than verified.
	Bad bool
}

// detailData is a verification's page.
type detailData struct {
	V         verify.Verification
	Flow      string
	Recipient string
	Unmasked  bool
	Timeline  []timelineEntry
	Open      bool
	Error     string
}

// verificationPage shows one verification and its timeline.
func (s *server) verificationPage(w http.ResponseWriter, r *http.Request, c consoleReq) {
	s.showVerification(w, r, c, http.StatusOK, "")
}

func (s *server) showVerification(w http.ResponseWriter, r *http.Request, c consoleReq, status int, errMsg string) {
	ctx := r.Context()
	v, err := s.eng.Get(ctx, r.PathValue("id"))
	if err != nil {
		s.engineError(w, r, c, err)
		return
	}
	data := detailData{V: v, Unmasked: unmasked(r.URL.Query()), Open: v.Status.Open(), Error: errMsg}
	data.Flow = v.FlowID
	if f, err := s.eng.Flow(ctx, v.FlowID); err == nil {
		data.Flow = f.Name
	}
	to := v.To
	if !data.Unmasked {
		to = verify.MaskRecipient(to)
	}
	data.Recipient = strings.TrimSpace(to.Phone + " " + to.Email)
	if data.Unmasked && status == http.StatusOK {
		s.audit(r, c.who, "verification.reveal", v.ID, "")
	}
	data.Timeline = timeline(v, data.Recipient, data.Flow)
	s.render(w, r, status, "verification", c, consolePage{Title: "Verification", Nav: "verifications", Flash: flashOf(r), Data: data})
}

// timeline is v's events in the order they happened: its creation, each
// delivery and its receipt, each counted check, and its end.
func timeline(v verify.Verification, recipient, flow string) []timelineEntry {
	out := []timelineEntry{{At: v.CreatedAt, Kind: "created",
		Text: fmt.Sprintf("Started on flow %s for %s; the code is valid until %s UTC.", flow, recipient, v.ExpiresAt.UTC().Format(time.TimeOnly))}}
	for _, d := range v.Deliveries {
		what := fmt.Sprintf("Step %d: %s", d.Step+1, d.Channel)
		if d.Step < 0 {
			what = "Resend: " + d.Channel
		}
		if d.From != "" {
			what += " from " + d.From
		}
		sent := timelineEntry{At: d.CreatedAt, Kind: "sent"}
		switch {
		case d.Status == verify.DeliveryFailed && !d.UpdatedAt.After(d.CreatedAt):
			sent.Text, sent.Bad = what+" failed: "+cmp.Or(d.Error, "no reason given")+".", true
			out = append(out, sent)
			continue
		default:
			sent.Text = what + " sent"
			if d.ProviderID != "" {
				sent.Text += " (message " + d.ProviderID + ")"
			}
			sent.Text += "."
		}
		out = append(out, sent)
		if d.UpdatedAt.After(d.CreatedAt) && d.Status != verify.DeliverySent {
			rc := timelineEntry{At: d.UpdatedAt, Kind: "receipt", Text: fmt.Sprintf("Receipt for the %s message: %s.", d.Channel, d.Status)}
			if d.Status == verify.DeliveryFailed {
				rc.Text, rc.Bad = fmt.Sprintf("Receipt for the %s message: failed: %s.", d.Channel, cmp.Or(d.Error, "no reason given")), true
			}
			out = append(out, rc)
		}
	}
	rightCheck := false
	for i, ch := range v.Checks {
		e := timelineEntry{At: ch.At, Kind: "check", Text: fmt.Sprintf("Check %d: the right code.", i+1)}
		if !ch.Right {
			e.Text, e.Bad = fmt.Sprintf("Check %d: a wrong code.", i+1), true
		}
		rightCheck = rightCheck || ch.Right
		out = append(out, e)
	}
	if !v.Status.Open() {
		end := timelineEntry{Kind: "ended", At: v.VerifiedAt}
		switch v.Status {
		case verify.StatusVerified:
			end.Text = "Verified."
			if !rightCheck {
				end.Text = "Verified (not by a check of its code)."
			}
		case verify.StatusMaxAttempts:
			end.Text, end.Bad = "Ended: no attempts left.", true
		case verify.StatusExpired:
			end.Text, end.Bad = "Ended: the code expired.", true
		case verify.StatusCanceled:
			end.Text, end.Bad = "Canceled.", true
		case verify.StatusFailed:
			end.Text, end.Bad = "Ended: no channel could deliver the code.", true
		default:
			end.Text = "Ended: " + string(v.Status) + "."
		}
		if end.At.IsZero() {
			end.At = endedAt(v)
		}
		out = append(out, end)
	}
	slices.SortStableFunc(out, func(a, b timelineEntry) int { return a.At.Compare(b.At) })
	return out
}

// endedAt is when an ended verification ended, as far as its public view
// tells: the latest of its events.
func endedAt(v verify.Verification) time.Time {
	t := v.CreatedAt
	for _, d := range v.Deliveries {
		t = maxTime(t, maxTime(d.CreatedAt, d.UpdatedAt))
	}
	for _, c := range v.Checks {
		t = maxTime(t, c.At)
	}
	if v.Status == verify.StatusExpired {
		t = maxTime(t, v.ExpiresAt)
	}
	return t
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// consoleAction runs act (Cancel or Resend) on the verification in
// the path and shows it again: with a flash when it worked, with the
// engine's refusal (a cooldown, an ended verification) when it did not.
func (s *server) consoleAction(act func(ctx context.Context, id string) (verify.Verification, error), action, flash string) consoleHandler {
	return func(w http.ResponseWriter, r *http.Request, c consoleReq) {
		id := r.PathValue("id")
		if _, err := act(r.Context(), id); err != nil {
			if errors.Is(err, verify.ErrNotFound) {
				s.engineError(w, r, c, err)
				return
			}
			ve, ok := s.refusal(w, r, c, err)
			if !ok {
				return
			}
			s.showVerification(w, r, c, ve.HTTPStatus(), ve.Message)
			return
		}
		s.audit(r, c.who, action, id, "")
		redirectFlash(w, r, consolePath+"verifications/"+url.PathEscape(id), flash)
	}
}
