package httpapi

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// The console's flows: a list, and one form to create or edit a flow with
// its steps. A field the form cannot read (a TTL that is not a duration)
// and a field the engine refuses (its *verify.Error names the parameter)
// are both shown beside the field, with the form as it was posted.

// blankSteps is how many empty step rows the form offers for new steps.
const blankSteps = 2

// flowRow is a flow in the list.
type flowRow struct {
	verify.Flow
	// Route is the steps in order, as "sms → voice after 30s".
	Route string
}

func (s *server) flowsPage(w http.ResponseWriter, r *http.Request, c consoleReq) {
	flows, err := s.eng.Flows(r.Context())
	if err != nil {
		s.engineError(w, r, c, err)
		return
	}
	rows := make([]flowRow, len(flows))
	for i, f := range flows {
		rows[i] = flowRow{f, route(f.Steps)}
	}
	s.render(w, r, http.StatusOK, "flows", c, consolePage{Title: "Flows", Nav: "flows", Flash: flashOf(r), Data: rows})
}

// route describes steps in order: "sms → voice after 30s → email with it".
func route(steps []verify.Step) string {
	var b strings.Builder
	for i, st := range steps {
		if i > 0 {
			b.WriteString(" → ")
		}
		b.WriteString(st.Channel)
		switch {
		case i == 0:
		case st.After == 0:
			b.WriteString(" with it")
		default:
			b.WriteString(" after " + formatDuration(st.After))
		}
	}
	return b.String()
}

// flowForm is the flow form's data: the fields as text (as loaded, or as
// posted), their errors by field name, and the choices.
type flowForm struct {
	ID     string
	Values url.Values
	Steps  []stepForm
	// Errors are by field name ("ttl", "steps[1].after"); "" is an error
	// about the whole flow.
	Errors    map[string]string
	Channels  []string
	Templates []verify.Template // approved ones
}

// stepForm is one step row of the form.
type stepForm struct {
	// Row is the row's index in the form, which its fields' names carry.
	Row                                      int
	Channel, From, Template, Language, After string
	Anyway                                   bool
	WebOTPDomain, AppHash                    string
	Errors                                   map[string]string
}

// field names a step row's field: "steps[2].after".
func (st stepForm) Field(name string) string { return fmt.Sprintf("steps[%d].%s", st.Row, name) }

// Err is the error of the row's field name, or "".
func (st stepForm) Err(name string) string { return st.Errors[name] }

// Err is the error of field name, or "".
func (f flowForm) Err(name string) string { return f.Errors[name] }

// Get is the text of field name.
func (f flowForm) Get(name string) string { return f.Values.Get(name) }

// Checked reports whether checkbox name was ticked.
func (f flowForm) Checked(name string) bool { return f.Values.Get(name) != "" }

// flowFormPage shows the form for a new flow, or for the flow in the path.
func (s *server) flowFormPage(w http.ResponseWriter, r *http.Request, c consoleReq) {
	ctx := r.Context()
	form := flowForm{Values: url.Values{}, Errors: map[string]string{}}
	var steps []verify.Step
	if id := r.PathValue("id"); id != "" {
		f, err := s.eng.Flow(ctx, id)
		if err != nil {
			s.engineError(w, r, c, err)
			return
		}
		form.ID = f.ID
		form.Values = flowValues(f)
		steps = f.Steps
	} else {
		form.Values.Set("code_length", "6")
		form.Values.Set("ttl", "5m")
		form.Values.Set("max_attempts", "5")
		form.Values.Set("language", "en")
	}
	for i, st := range steps {
		form.Steps = append(form.Steps, stepForm{Row: i, Channel: st.Channel, From: st.From, Template: st.Template,
			Language: st.Language, After: formatDuration(st.After), Anyway: i > 0 && st.After == 0,
			WebOTPDomain: st.WebOTPDomain, AppHash: st.AppHash})
	}
	s.renderFlowForm(w, r, c, http.StatusOK, form)
}

// flowValues are a flow's fields as the form shows them.
func flowValues(f verify.Flow) url.Values {
	v := url.Values{}
	v.Set("name", f.Name)
	v.Set("description", f.Description)
	v.Set("brand", f.Brand)
	v.Set("code_length", strconv.Itoa(f.CodeLength))
	v.Set("charset", f.Charset.String())
	v.Set("ttl", formatDuration(f.TTL))
	v.Set("max_attempts", strconv.Itoa(f.MaxAttempts))
	v.Set("language", f.Language)
	v.Set("duplicates", string(f.Duplicates))
	v.Set("allowed_ips", strings.Join(f.AllowedIPs, "\n"))
	v.Set("allowed_countries", strings.Join(f.AllowedCountries, " "))
	v.Set("denied_countries", strings.Join(f.DeniedCountries, " "))
	if f.Default {
		v.Set("default", "1")
	}
	return v
}

// renderFlowForm adds the choices and blank step rows and shows the form.
func (s *server) renderFlowForm(w http.ResponseWriter, r *http.Request, c consoleReq, status int, form flowForm) {
	form.Channels = s.eng.Channels()
	if ts, err := s.eng.Templates(r.Context()); err == nil {
		for _, t := range ts {
			if t.Status == verify.TemplateApproved {
				form.Templates = append(form.Templates, t)
			}
		}
	}
	next := 0
	for _, st := range form.Steps {
		next = max(next, st.Row+1)
	}
	for i := range blankSteps {
		form.Steps = append(form.Steps, stepForm{Row: next + i})
	}
	title := "New flow"
	if form.ID != "" {
		title = "Edit flow " + form.Values.Get("name")
	}
	s.render(w, r, status, "flow", c, consolePage{Title: title, Nav: "flows", Flash: flashOf(r), Data: form})
}

// saveFlowForm creates a flow (flows/new) or replaces the one in the path
// from the posted form.
func (s *server) saveFlowForm(w http.ResponseWriter, r *http.Request, c consoleReq) {
	ctx := r.Context()
	form := flowForm{ID: r.PathValue("id"), Values: r.PostForm, Errors: map[string]string{}}
	f := verify.Flow{}
	if form.ID != "" {
		old, err := s.eng.Flow(ctx, form.ID)
		if err != nil {
			s.engineError(w, r, c, err)
			return
		}
		f = old // keeps what the form does not show (denied number types)
	}
	rows := readFlowForm(&form, &f)
	if len(form.Errors) > 0 {
		s.renderFlowForm(w, r, c, http.StatusBadRequest, form)
		return
	}
	var err error
	flash, action := "flow-created", "flow.create"
	if form.ID != "" {
		f, err = s.eng.UpdateFlow(ctx, f)
		flash, action = "flow-saved", "flow.update"
	} else {
		f, err = s.eng.CreateFlow(ctx, f)
	}
	if err != nil {
		ve, ok := s.refusal(w, r, c, err)
		if !ok {
			return
		}
		if ve.Parameter == "flow_id" { // the flow is gone
			s.engineError(w, r, c, err)
			return
		}
		form.setError(ve.Parameter, ve.Message, rows)
		s.renderFlowForm(w, r, c, ve.HTTPStatus(), form)
		return
	}
	s.audit(r, c.who, action, f.ID, f.Name)
	redirectFlash(w, r, consolePath+"flows", flash)
}

// setError puts an engine error beside its field. A step's parameter
// ("steps[1].after") counts the flow's steps, which rows maps back to the
// form's rows; an error naming no field the form has is shown above it.
func (form *flowForm) setError(param, msg string, rows []int) {
	if rest, ok := strings.CutPrefix(param, "steps["); ok {
		idx, field, _ := strings.Cut(rest, "]")
		field = strings.TrimPrefix(field, ".")
		if field == "" {
			field = "step" // about the whole step
		}
		if i, err := strconv.Atoi(idx); err == nil && i >= 0 && i < len(rows) {
			for k := range form.Steps {
				if form.Steps[k].Row == rows[i] {
					form.Steps[k].Errors = map[string]string{field: msg}
					return
				}
			}
		}
	}
	switch param {
	case "name", "description", "brand", "code_length", "charset", "ttl", "max_attempts", "language",
		"duplicates", "allowed_ips", "allowed_countries", "denied_countries", "steps":
		form.Errors[param] = msg
	default:
		form.Errors[""] = msg
	}
}

// readFlowForm reads the posted fields into f, and the step rows into
// form.Steps (for showing again) and f.Steps, skipping blank rows and rows
// marked for removal. It returns, for each of f's steps, its form row. The
// fields it cannot read are in form.Errors.
func readFlowForm(form *flowForm, f *verify.Flow) []int {
	v := form.Values
	f.Name = strings.TrimSpace(v.Get("name"))
	f.Description = strings.TrimSpace(v.Get("description"))
	f.Brand = strings.TrimSpace(v.Get("brand"))
	f.Language = strings.TrimSpace(v.Get("language"))
	f.Default = v.Get("default") != ""
	f.Duplicates = verify.DuplicatePolicy(v.Get("duplicates"))
	number := func(name string) int {
		t := strings.TrimSpace(v.Get(name))
		if t == "" {
			return 0
		}
		n, err := strconv.Atoi(t)
		if err != nil {
			form.Errors[name] = "Enter a whole number."
		}
		return n
	}
	f.CodeLength = number("code_length")
	f.MaxAttempts = number("max_attempts")
	switch v.Get("charset") {
	case "", "numeric":
		f.Charset = verify.Numeric
	case "alphanumeric":
		f.Charset = verify.Alphanumeric
	default:
		form.Errors["charset"] = "Choose numeric or alphanumeric."
	}
	if d, ok := readDuration(v.Get("ttl")); ok {
		f.TTL = d
	} else {
		form.Errors["ttl"] = `Enter a duration such as "5m" or "90s".`
	}
	f.AllowedIPs = fieldsOf(v.Get("allowed_ips"))
	f.AllowedCountries = upper(fieldsOf(v.Get("allowed_countries")))
	f.DeniedCountries = upper(fieldsOf(v.Get("denied_countries")))

	var rowsOf []int
	f.Steps = nil
	for _, row := range stepRows(v) {
		get := func(name string) string { return strings.TrimSpace(v.Get(fmt.Sprintf("steps[%d].%s", row, name))) }
		st := stepForm{Row: row, Channel: get("channel"), From: get("from"), Template: get("template"),
			Language: get("language"), After: get("after"), Anyway: get("anyway") != "",
			WebOTPDomain: get("web_otp_domain"), AppHash: get("app_hash")}
		if st.Channel == "" && st.From == "" && st.Template == "" && st.Language == "" && st.After == "" &&
			st.WebOTPDomain == "" && st.AppHash == "" {
			continue // a blank row
		}
		if get("remove") != "" {
			continue
		}
		step := verify.Step{Channel: st.Channel, From: st.From, Template: st.Template, Language: st.Language,
			WebOTPDomain: st.WebOTPDomain, AppHash: st.AppHash}
		switch d, ok := readDuration(st.After); {
		case !ok:
			st.Errors = map[string]string{"after": `Enter a duration such as "30s" or "2m".`}
		case len(f.Steps) > 0 && st.Anyway && d != 0:
			st.Errors = map[string]string{"after": "A step sent with the previous one has no delay: clear this, or untick “send with the previous step”."}
		case len(f.Steps) > 0 && !st.Anyway && d == 0:
			st.Errors = map[string]string{"after": "Give a delay after the previous step, or tick “send with the previous step”."}
		default:
			step.After = d
		}
		if st.Errors != nil {
			form.Errors["steps"] = "A step needs correcting."
		}
		form.Steps = append(form.Steps, st)
		f.Steps = append(f.Steps, step)
		rowsOf = append(rowsOf, row)
	}
	return rowsOf
}

// stepRows are the row indexes the posted form has fields for, in the
// order of their position fields.
func stepRows(v url.Values) []int {
	var rows []int
	for name := range v {
		var row int
		var rest string
		if n, _ := fmt.Sscanf(name, "steps[%d].%s", &row, &rest); n == 2 && row >= 0 && row < 100 && !slices.Contains(rows, row) {
			rows = append(rows, row)
		}
	}
	// In the order of their positions, as the operator numbered them;
	// ties (and rows without a number) in the order of the form.
	pos := func(row int) int {
		if n, err := strconv.Atoi(strings.TrimSpace(v.Get(fmt.Sprintf("steps[%d].position", row)))); err == nil {
			return n
		}
		return row + 1
	}
	slices.SortFunc(rows, func(a, b int) int { return cmp.Or(cmp.Compare(pos(a), pos(b)), cmp.Compare(a, b)) })
	return rows
}

// readDuration reads a duration as the form writes it; "" is zero.
func readDuration(s string) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, true
	}
	if n, err := strconv.Atoi(s); err == nil { // bare seconds
		return time.Duration(n) * time.Second, n >= 0 && n <= maxWireSeconds
	}
	d, err := time.ParseDuration(s)
	return d, err == nil && d >= 0 && d <= maxWireSeconds*time.Second
}

// fieldsOf splits a list typed one per line, or separated by commas or
// spaces.
func fieldsOf(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

func upper(ss []string) []string {
	for i, s := range ss {
		ss[i] = strings.ToUpper(s)
	}
	return ss
}
