package httpapi

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/openverify/verify"
)

// auditData is the audit log page's.
type auditData struct {
	Form    url.Values
	Entries []verify.AuditEntry
	Next    string
	Error   string
	Notice  string
}

// Get is the text of filter field name.
func (d auditData) Get(name string) string { return d.Form.Get(name) }

// auditPage lists what operators did, newest first, filtered by actor,
// action and target.
func (s *server) auditPage(w http.ResponseWriter, r *http.Request, c consoleReq) {
	v := r.URL.Query()
	data := auditData{Form: v}
	status := http.StatusOK
	page, err := s.eng.AuditLog(r.Context(), auditQuery(v, consolePageSize))
	switch {
	case errors.Is(err, verify.ErrAuditUnsupported):
		data.Notice = "This store keeps no audit log (verify.AuditStore)."
	case err != nil:
		ve, ok := s.refusal(w, r, c, err)
		if !ok {
			return
		}
		data.Error, status = ve.Message, ve.HTTPStatus()
	default:
		data.Entries = page.Entries
		if page.Next != "" {
			data.Next = pageLink("audit", v, "cursor", page.Next)
		}
	}
	s.render(w, r, status, "audit", c, consolePage{Title: "Audit log", Nav: "audit", Data: data})
}

// auditQuery reads the audit log's filters from a query string.
func auditQuery(v url.Values, limit int) verify.AuditQuery {
	return verify.AuditQuery{Actor: v.Get("actor"), Action: v.Get("action"), Target: v.Get("target"),
		Cursor: v.Get("cursor"), Limit: limit}
}

// listAudit is GET /admin/audit: the audit log as JSON, newest first,
// with the filters actor, action and target, limit and cursor.
func (s *server) listAudit(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	limit := 0
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			s.writeError(w, r, invalidParam("limit", "limit must be a number"))
			return
		}
		limit = n
	}
	page, err := s.eng.AuditLog(r.Context(), auditQuery(v, limit))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, page)
}
