package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// The admin API, under /admin, authenticated with the admin key (see
// server.admin). Durations are whole seconds on the wire, as Kaleyra's
// flow settings are.

// flowJSON is a flow on the admin API.
type flowJSON struct {
	ID               string     `json:"id,omitempty"`
	Name             string     `json:"name"`
	Description      string     `json:"description,omitempty"`
	Brand            string     `json:"brand,omitempty"`
	CodeLength       int        `json:"code_length,omitempty"`
	Charset          string     `json:"charset,omitempty"` // "numeric" (default) or "alphanumeric"
	TTL              int        `json:"ttl,omitempty"`     // seconds; default 300
	MaxAttempts      int        `json:"max_attempts,omitempty"`
	Steps            []stepJSON `json:"steps"`
	Default          bool       `json:"default"`
	Language         string     `json:"language,omitempty"`
	AllowedIPs       []string   `json:"allowed_ips,omitempty"`
	AllowedCountries []string   `json:"allowed_countries,omitempty"`
	DeniedCountries  []string   `json:"denied_countries,omitempty"`
	Duplicates       string     `json:"duplicates,omitempty"` // reuse (default), replace or allow
	CreatedAt        time.Time  `json:"created_at,omitzero"`
}

type stepJSON struct {
	Channel      string `json:"channel"`
	From         string `json:"from,omitempty"`
	Template     string `json:"template,omitempty"`
	After        int    `json:"after"` // seconds after the previous step; 0 sends with it
	WebOTPDomain string `json:"web_otp_domain,omitempty"`
	AppHash      string `json:"app_hash,omitempty"`
	// Language is the step's own message language, over the
	// verification's ("en-US").
	Language string `json:"language,omitempty"`
}

func flowToJSON(f verify.Flow) flowJSON {
	j := flowJSON{
		ID: f.ID, Name: f.Name, Description: f.Description, Brand: f.Brand, CodeLength: f.CodeLength,
		Charset: f.Charset.String(), TTL: int(f.TTL / time.Second), MaxAttempts: f.MaxAttempts,
		Steps: make([]stepJSON, len(f.Steps)), Default: f.Default, Language: f.Language,
		AllowedIPs: f.AllowedIPs, AllowedCountries: f.AllowedCountries, DeniedCountries: f.DeniedCountries,
		Duplicates: string(f.Duplicates), CreatedAt: f.CreatedAt,
	}
	for i, s := range f.Steps {
		j.Steps[i] = stepJSON{Channel: s.Channel, From: s.From, Template: s.Template, After: int(s.After / time.Second),
			WebOTPDomain: s.WebOTPDomain, AppHash: s.AppHash, Language: s.Language}
	}
	return j
}

// maxWireSeconds is the longest duration a flow's fields take on the
// wire, a day (the engine's longest TTL): a number is checked against it
// before it becomes a time.Duration, which a larger one would overflow.
const maxWireSeconds = 24 * 60 * 60

// wireSeconds converts a whole number of seconds from a request, refusing
// a negative one or one past maxWireSeconds rather than letting it wrap.
func wireSeconds(param string, n int) (time.Duration, error) {
	if n < 0 || n > maxWireSeconds {
		return 0, &verify.Error{Code: verify.ErrInvalidFlow.Code, Type: verify.TypeRequest, Parameter: param,
			Message: fmt.Sprintf("%s must be 0 to %d seconds, got %d", param, maxWireSeconds, n)}
	}
	return time.Duration(n) * time.Second, nil
}

func flowFromJSON(j flowJSON) (verify.Flow, error) {
	ttl, err := wireSeconds("ttl", j.TTL)
	if err != nil {
		return verify.Flow{}, err
	}
	f := verify.Flow{
		Name: j.Name, Description: j.Description, Brand: j.Brand, CodeLength: j.CodeLength,
		TTL: ttl, MaxAttempts: j.MaxAttempts, Default: j.Default, Language: j.Language,
		AllowedIPs: j.AllowedIPs, AllowedCountries: j.AllowedCountries, DeniedCountries: j.DeniedCountries,
		Duplicates: verify.DuplicatePolicy(j.Duplicates), Steps: make([]verify.Step, len(j.Steps)),
	}
	switch strings.ToLower(j.Charset) {
	case "", "numeric":
		f.Charset = verify.Numeric
	case "alphanumeric":
		f.Charset = verify.Alphanumeric
	default:
		return f, &verify.Error{Code: verify.ErrInvalidFlow.Code, Type: verify.TypeRequest, Parameter: "charset",
			Message: "charset must be numeric or alphanumeric"}
	}
	for i, s := range j.Steps {
		after, err := wireSeconds(fmt.Sprintf("steps[%d].after", i), s.After)
		if err != nil {
			return f, err
		}
		f.Steps[i] = verify.Step{Channel: s.Channel, From: s.From, Template: s.Template,
			After: after, WebOTPDomain: s.WebOTPDomain, AppHash: s.AppHash, Language: s.Language}
	}
	return f, nil
}

func (s *server) listFlows(w http.ResponseWriter, r *http.Request) {
	flows, err := s.eng.Flows(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]flowJSON, len(flows))
	for i, f := range flows {
		out[i] = flowToJSON(f)
	}
	s.writeJSON(w, r, http.StatusOK, dataEnvelope[[]flowJSON]{out})
}

func (s *server) createFlow(w http.ResponseWriter, r *http.Request) {
	var j flowJSON
	if !s.decodeAdminJSON(w, r, &j) {
		return
	}
	f, err := flowFromJSON(j)
	if err == nil {
		f, err = s.eng.CreateFlow(r.Context(), f)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.audit(r, s.apiActor(r), "flow.create", f.ID, f.Name)
	s.writeJSON(w, r, http.StatusCreated, dataEnvelope[flowJSON]{flowToJSON(f)})
}

func (s *server) getFlow(w http.ResponseWriter, r *http.Request) {
	f, err := s.eng.Flow(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, dataEnvelope[flowJSON]{flowToJSON(f)})
}

// updateFlow replaces a flow; the ID in the path wins over one in the body.
func (s *server) updateFlow(w http.ResponseWriter, r *http.Request) {
	var j flowJSON
	if !s.decodeAdminJSON(w, r, &j) {
		return
	}
	f, err := flowFromJSON(j)
	if err == nil {
		f.ID = r.PathValue("id")
		f, err = s.eng.UpdateFlow(r.Context(), f)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.audit(r, s.apiActor(r), "flow.update", f.ID, f.Name)
	s.writeJSON(w, r, http.StatusOK, dataEnvelope[flowJSON]{flowToJSON(f)})
}

func (s *server) deleteFlow(w http.ResponseWriter, r *http.Request) {
	if err := s.eng.DeleteFlow(r.Context(), r.PathValue("id")); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.audit(r, s.apiActor(r), "flow.delete", r.PathValue("id"), "")
	w.WriteHeader(http.StatusNoContent)
}

type templateRequest struct {
	Name     string `json:"name"`
	Channel  string `json:"channel"`
	Body     string `json:"body"`
	Language string `json:"language"`
}

func (s *server) listTemplates(w http.ResponseWriter, r *http.Request) {
	ts, err := s.eng.Templates(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if st := r.URL.Query().Get("status"); st != "" {
		kept := ts[:0]
		for _, t := range ts {
			if string(t.Status) == st {
				kept = append(kept, t)
			}
		}
		ts = kept
	}
	if ts == nil {
		ts = []verify.Template{}
	}
	s.writeJSON(w, r, http.StatusOK, dataEnvelope[[]verify.Template]{ts})
}

func (s *server) createTemplate(w http.ResponseWriter, r *http.Request) {
	var req templateRequest
	if !s.decodeAdminJSON(w, r, &req) {
		return
	}
	t, err := s.eng.CreateTemplate(r.Context(), verify.Template{Name: req.Name, Channel: req.Channel, Body: req.Body, Language: req.Language})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.audit(r, s.apiActor(r), "template.create", t.ID, t.Name)
	s.writeJSON(w, r, http.StatusCreated, dataEnvelope[verify.Template]{t})
}

func (s *server) getTemplate(w http.ResponseWriter, r *http.Request) {
	t, err := s.eng.Template(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, dataEnvelope[verify.Template]{t})
}

func (s *server) approveTemplate(w http.ResponseWriter, r *http.Request) {
	s.reviewTemplate(w, r, "template.approve", "", func(id string) error { return s.eng.ApproveTemplate(r.Context(), id) })
}

func (s *server) rejectTemplate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Reason string `json:"reason"`
	}
	if !s.decodeAdminJSON(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Reason) == "" {
		s.writeError(w, r, missingField("reason"))
		return
	}
	s.reviewTemplate(w, r, "template.reject", req.Reason, func(id string) error { return s.eng.RejectTemplate(r.Context(), id, req.Reason) })
}

func (s *server) reviewTemplate(w http.ResponseWriter, r *http.Request, action, detail string, review func(id string) error) {
	id := r.PathValue("id")
	if err := review(id); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.audit(r, s.apiActor(r), action, id, detail)
	s.getTemplate(w, r)
}

// parseQuery reads List, Stats and WriteCSV filters from URL parameters:
// status (repeated or comma-separated), flow_id, channel, foreign_id,
// recipient, from and to (RFC 3339), limit and cursor.
func parseQuery(v url.Values) (verify.Query, error) {
	q := verify.Query{
		FlowID: v.Get("flow_id"), Channel: v.Get("channel"), ForeignID: v.Get("foreign_id"),
		Recipient: v.Get("recipient"), Cursor: v.Get("cursor"),
	}
	bad := func(p, msg string) error { return invalidParam(p, "%s", msg) }
	for _, list := range v["status"] {
		for _, st := range strings.Split(list, ",") {
			if st = strings.TrimSpace(st); st != "" {
				q.Statuses = append(q.Statuses, verify.Status(st))
			}
		}
	}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		if s := v.Get(t.name); s != "" {
			at, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return q, bad(t.name, t.name+" must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
			}
			*t.dst = at
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return q, bad("limit", "limit must be a number")
		}
		q.Limit = n
	}
	return q, nil
}

// revealDetail describes, for the audit log, a search whose recipients
// were shown in full: its filters.
func revealDetail(v url.Values) string {
	v = cloneValues(v)
	v.Del("unmasked")
	v.Del("cursor")
	if e := v.Encode(); e != "" {
		return "search " + e
	}
	return "all verifications"
}

func unmasked(v url.Values) bool {
	b, _ := strconv.ParseBool(v.Get("unmasked"))
	return b
}

// maskVerification hides the recipient, for lists shown to people.
func maskVerification(v verify.Verification) verify.Verification {
	v.To = verify.MaskRecipient(v.To)
	return v
}

func (s *server) listVerifications(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page, err := s.eng.List(r.Context(), q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !unmasked(r.URL.Query()) {
		for i := range page.Verifications {
			page.Verifications[i] = maskVerification(page.Verifications[i])
		}
	} else {
		s.audit(r, s.apiActor(r), "verifications.reveal", "", revealDetail(r.URL.Query()))
	}
	s.writeJSON(w, r, http.StatusOK, page)
}

func (s *server) getVerification(w http.ResponseWriter, r *http.Request) {
	s.verificationAction(w, r, "", s.eng.Get)
}

func (s *server) cancelVerification(w http.ResponseWriter, r *http.Request) {
	s.verificationAction(w, r, "verification.cancel", s.eng.Cancel)
}

func (s *server) resendVerification(w http.ResponseWriter, r *http.Request) {
	s.verificationAction(w, r, "verification.resend", s.eng.Resend)
}

// verificationAction runs act on the verification in the path and answers
// it, masked unless asked; action names it in the audit log ("" for a
// read). Showing a recipient in full is recorded too.
func (s *server) verificationAction(w http.ResponseWriter, r *http.Request, action string, act func(ctx context.Context, id string) (verify.Verification, error)) {
	v, err := act(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if action != "" {
		s.audit(r, s.apiActor(r), action, v.ID, "")
	}
	if unmasked(r.URL.Query()) {
		s.audit(r, s.apiActor(r), "verification.reveal", v.ID, "")
	} else {
		v = maskVerification(v)
	}
	s.writeJSON(w, r, http.StatusOK, dataEnvelope[verify.Verification]{v})
}

// statsJSON is verify.Stats with durations in seconds.
type statsJSON struct {
	Total                 int                            `json:"total"`
	ByStatus              map[verify.Status]int          `json:"by_status"`
	Sent                  int                            `json:"sent"`
	Verified              int                            `json:"verified"`
	Conversion            float64                        `json:"conversion"`
	MedianSecondsToVerify float64                        `json:"median_seconds_to_verify"`
	Channels              map[string]verify.ChannelStats `json:"channels"`
	Flows                 map[string]flowStatsJSON       `json:"flows"`
}

type flowStatsJSON struct {
	Total                 int     `json:"total"`
	Sent                  int     `json:"sent"`
	Verified              int     `json:"verified"`
	Conversion            float64 `json:"conversion"`
	MedianSecondsToVerify float64 `json:"median_seconds_to_verify"`
}

func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	st, err := s.eng.Stats(r.Context(), q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := statsJSON{Total: st.Total, ByStatus: st.ByStatus, Sent: st.Sent, Verified: st.Verified,
		Conversion: st.Conversion, MedianSecondsToVerify: st.MedianTimeToVerify.Seconds(),
		Channels: st.Channels, Flows: make(map[string]flowStatsJSON, len(st.Flows))}
	for id, f := range st.Flows {
		out.Flows[id] = flowStatsJSON{Total: f.Total, Sent: f.Sent, Verified: f.Verified, Conversion: f.Conversion,
			MedianSecondsToVerify: f.MedianTimeToVerify.Seconds()}
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// reportCSV streams the verifications as CSV, recipients masked unless
// ?unmasked=1.
func (s *server) reportCSV(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Ask for one row first, so that a bad query or a store without
	// reports is still answered with an error status.
	probe := q
	probe.Limit, probe.Cursor = 1, ""
	if _, err := s.eng.List(r.Context(), probe); err != nil {
		s.writeError(w, r, err)
		return
	}
	if unmasked(r.URL.Query()) {
		s.audit(r, s.apiActor(r), "verifications.reveal", "", "CSV, "+revealDetail(r.URL.Query()))
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="verifications.csv"`)
	if err := s.eng.WriteCSV(r.Context(), w, q, verify.CSVOptions{Unmasked: unmasked(r.URL.Query())}); err != nil {
		// The status is sent; all that is left is to log and cut the body.
		s.st.logger.ErrorContext(r.Context(), "writing the CSV report", "error", err)
		panic(http.ErrAbortHandler)
	}
}
