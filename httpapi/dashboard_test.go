package httpapi

import (
	"encoding/xml"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// node is an element of a parsed HTML page.
type node struct {
	name     string
	attr     map[string]string
	children []*node
	text     strings.Builder
}

// parseHTML parses a page with encoding/xml in its lenient HTML mode.
func parseHTML(t *testing.T, page string) *node {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(page))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	root := &node{name: "#root"}
	stack := []*node{root}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		switch tok := tok.(type) {
		case xml.StartElement:
			n := &node{name: strings.ToLower(tok.Name.Local), attr: map[string]string{}}
			for _, a := range tok.Attr {
				n.attr[a.Name.Local] = a.Value
			}
			top := stack[len(stack)-1]
			top.children = append(top.children, n)
			stack = append(stack, n)
		case xml.EndElement:
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
		case xml.CharData:
			for _, n := range stack {
				n.text.Write(tok)
			}
		}
	}
	return root
}

// find returns the elements under n for which match is true.
func (n *node) find(match func(*node) bool) []*node {
	var out []*node
	for _, c := range n.children {
		if match(c) {
			out = append(out, c)
		}
		out = append(out, c.find(match)...)
	}
	return out
}

func (n *node) Text() string { return strings.TrimSpace(n.text.String()) }

func hasClass(c string) func(*node) bool {
	return func(n *node) bool { return slices.Contains(strings.Fields(n.attr["class"]), c) }
}

func byID(root *node, id string) *node {
	found := root.find(func(n *node) bool { return n.attr["id"] == id })
	if len(found) != 1 {
		return &node{}
	}
	return found[0]
}

func TestDashboard(t *testing.T) {
	h := newHarness(t)
	ids, codes := h.seed()

	res := h.do("GET", "/admin/", "")
	require.Equal(t, http.StatusUnauthorized, res.status)

	req, err := http.NewRequest("GET", h.srv.URL+"/admin/?flow_id=", nil)
	require.NoError(t, err)
	req.SetBasicAuth("admin", testAdminKey)
	hres, err := h.srv.Client().Do(req)
	require.NoError(t, err)
	defer hres.Body.Close()
	require.Equal(t, http.StatusOK, hres.StatusCode)
	assert.Equal(t, "text/html; charset=utf-8", hres.Header.Get("Content-Type"))
	assert.Contains(t, hres.Header.Get("Content-Security-Policy"), "default-src 'none'")
	b, err := io.ReadAll(hres.Body)
	require.NoError(t, err)
	page := string(b)
	doc := parseHTML(t, page)

	assert.Equal(t, "3", byID(doc, "total").Text())
	assert.Equal(t, "3", byID(doc, "sent").Text())
	assert.Equal(t, "2", byID(doc, "verified").Text())
	assert.Equal(t, "66.7%", byID(doc, "conversion").Text())

	chans := map[string]*node{}
	for _, row := range doc.find(hasClass("channel")) {
		chans[row.attr["data-channel"]] = row
	}
	require.Contains(t, chans, "sms")
	require.Contains(t, chans, "email")
	cell := func(row *node, class string) string {
		cells := row.find(hasClass(class))
		require.Len(t, cells, 1, class)
		return cells[0].Text()
	}
	assert.Equal(t, "2", cell(chans["sms"], "verifications"))
	assert.Equal(t, "1", cell(chans["sms"], "verified"))
	assert.Equal(t, "50.0%", cell(chans["sms"], "conversion"))
	assert.Equal(t, "1", cell(chans["email"], "verifications"))
	assert.Equal(t, "100.0%", cell(chans["email"], "conversion"))

	rows := doc.find(hasClass("verification"))
	require.Len(t, rows, 3)
	var recipients []string
	for i, row := range rows {
		assert.Equal(t, ids[2-i], row.attr["data-id"], "newest first")
		recipients = append(recipients, cell(row, "recipient"))
	}
	assert.Equal(t, []string{"a***@example.com", "+47******32", "+47******67"}, recipients)
	for _, full := range []string{"+4791234567", "+4798765432", "ana@example.com"} {
		assert.NotContains(t, page, full, "recipients are masked")
	}
	for _, code := range codes {
		assert.NotContains(t, page, code, "no code appears")
	}
	assert.Equal(t, "/admin/report.csv?flow_id=", byID(doc, "csv").attr["href"])
}
