package httpapi

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/openverify/verify"
)

// The console's templates: the list by status, a form to create one, and
// approve and reject (with a reason) for those pending.

// templatesData is the templates page's.
type templatesData struct {
	// Groups are the templates by status: pending first, then approved,
	// then rejected.
	Groups   []templateGroup
	Channels []string
	// Form is the new-template form as posted, when it needs correcting.
	Form   url.Values
	Errors map[string]string
}

type templateGroup struct {
	Status    verify.TemplateStatus
	Templates []verify.Template
}

// Err is the new-template form's error for field name, or "".
func (d templatesData) Err(name string) string { return d.Errors[name] }

func (s *server) templatesPage(w http.ResponseWriter, r *http.Request, c consoleReq) {
	s.renderTemplates(w, r, c, http.StatusOK, url.Values{}, nil)
}

func (s *server) renderTemplates(w http.ResponseWriter, r *http.Request, c consoleReq, status int, form url.Values, errs map[string]string) {
	ts, err := s.eng.Templates(r.Context())
	if err != nil {
		s.engineError(w, r, c, err)
		return
	}
	data := templatesData{Channels: s.eng.Channels(), Form: form, Errors: errs}
	for _, st := range []verify.TemplateStatus{verify.TemplatePending, verify.TemplateApproved, verify.TemplateRejected} {
		g := templateGroup{Status: st}
		for _, t := range ts {
			if t.Status == st {
				g.Templates = append(g.Templates, t)
			}
		}
		slices.SortStableFunc(g.Templates, func(a, b verify.Template) int { return b.CreatedAt.Compare(a.CreatedAt) })
		data.Groups = append(data.Groups, g)
	}
	s.render(w, r, status, "templates", c, consolePage{Title: "Templates", Nav: "templates", Flash: flashOf(r), Data: data})
}

// createTemplateForm creates a pending template from the posted form.
func (s *server) createTemplateForm(w http.ResponseWriter, r *http.Request, c consoleReq) {
	v := r.PostForm
	t := verify.Template{Name: strings.TrimSpace(v.Get("name")), Channel: v.Get("channel"),
		Body: strings.TrimSpace(v.Get("body")), Language: strings.TrimSpace(v.Get("language"))}
	t, err := s.eng.CreateTemplate(r.Context(), t)
	if err != nil {
		ve, ok := s.refusal(w, r, c, err)
		if !ok {
			return
		}
		field := ve.Parameter
		if !slices.Contains([]string{"name", "channel", "body", "language"}, field) {
			field = ""
		}
		s.renderTemplates(w, r, c, ve.HTTPStatus(), v, map[string]string{field: ve.Message})
		return
	}
	s.audit(r, c.who, "template.create", t.ID, t.Name)
	redirectFlash(w, r, consolePath+"templates", "template-created")
}

// rejectTemplateForm rejects the template in the path with the posted
// reason, which it needs.
func (s *server) rejectTemplateForm(w http.ResponseWriter, r *http.Request, c consoleReq) {
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	if reason == "" {
		s.renderTemplates(w, r, c, http.StatusBadRequest, url.Values{},
			map[string]string{"reason:" + r.PathValue("id"): "Give a reason, so that whoever wrote it can correct it."})
		return
	}
	if err := s.eng.RejectTemplate(r.Context(), r.PathValue("id"), reason); err != nil {
		s.engineError(w, r, c, err)
		return
	}
	s.audit(r, c.who, "template.reject", r.PathValue("id"), reason)
	redirectFlash(w, r, consolePath+"templates", "template-rejected")
}
