package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func assertFlow(t *testing.T, want, got verify.Flow) {
	t.Helper()
	sameTime(t, want.CreatedAt, got.CreatedAt, "Flow.CreatedAt")
	want.CreatedAt, got.CreatedAt = base, base
	assert.Equal(t, want, got)
}

func testFlowCRUD(t *testing.T, s verify.Catalog) {
	_, err := s.GetFlow(ctx(), newID())
	requireNotFound(t, err, "GetFlow of an unknown ID")

	a := sampleFlow("a")
	require.NoError(t, s.CreateFlow(ctx(), a))
	got, err := s.GetFlow(ctx(), a.ID)
	require.NoError(t, err)
	assertFlow(t, a, got)

	b := sampleFlow("b")
	b.Steps = []verify.Step{{Channel: "sms"}}
	b.CreatedAt = at(-time.Second) // older than a: listed first
	require.NoError(t, s.CreateFlow(ctx(), b))
	list, err := s.ListFlows(ctx())
	require.NoError(t, err)
	require.Len(t, list, 2)
	assertFlow(t, b, list[0])
	assertFlow(t, a, list[1])

	a.Name, a.Description, a.MaxAttempts = "a2", "changed", 9
	a.Steps = a.Steps[:1]
	require.NoError(t, s.UpdateFlow(ctx(), a))
	got, err = s.GetFlow(ctx(), a.ID)
	require.NoError(t, err)
	assertFlow(t, a, got)

	requireNotFound(t, s.UpdateFlow(ctx(), sampleFlow("ghost")), "UpdateFlow of an unknown ID")
	require.NoError(t, s.DeleteFlow(ctx(), a.ID))
	_, err = s.GetFlow(ctx(), a.ID)
	requireNotFound(t, err, "GetFlow after DeleteFlow")
	requireNotFound(t, s.DeleteFlow(ctx(), a.ID), "DeleteFlow twice")
	list, err = s.ListFlows(ctx())
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, b.ID, list[0].ID)
}

func testDefaultFlow(t *testing.T, s verify.Catalog) {
	_, err := s.DefaultFlow(ctx())
	requireNotFound(t, err, "DefaultFlow with no flows")

	a := sampleFlow("a")
	a.Default = true
	require.NoError(t, s.CreateFlow(ctx(), a))
	d, err := s.DefaultFlow(ctx())
	require.NoError(t, err)
	assert.Equal(t, a.ID, d.ID)

	b := sampleFlow("b")
	b.Default = true
	require.NoError(t, s.CreateFlow(ctx(), b))
	d, err = s.DefaultFlow(ctx())
	require.NoError(t, err)
	assert.Equal(t, b.ID, d.ID, "CreateFlow with Default makes it the default")
	got, err := s.GetFlow(ctx(), a.ID)
	require.NoError(t, err)
	assert.False(t, got.Default, "the old default lost its flag")

	a.Default = true
	require.NoError(t, s.UpdateFlow(ctx(), a))
	d, err = s.DefaultFlow(ctx())
	require.NoError(t, err)
	assert.Equal(t, a.ID, d.ID, "UpdateFlow with Default makes it the default")
	got, err = s.GetFlow(ctx(), b.ID)
	require.NoError(t, err)
	assert.False(t, got.Default, "UpdateFlow with Default unsets the other flows")

	list, err := s.ListFlows(ctx())
	require.NoError(t, err)
	defaults := 0
	for _, f := range list {
		if f.Default {
			defaults++
		}
	}
	assert.Equal(t, 1, defaults, "at most one default flow")

	a.Default = false
	require.NoError(t, s.UpdateFlow(ctx(), a))
	_, err = s.DefaultFlow(ctx())
	requireNotFound(t, err, "DefaultFlow after the default was unset")

	b.Default = true
	require.NoError(t, s.UpdateFlow(ctx(), b))
	require.NoError(t, s.DeleteFlow(ctx(), b.ID))
	_, err = s.DefaultFlow(ctx())
	requireNotFound(t, err, "DefaultFlow after the default was deleted")
}

func testTemplates(t *testing.T, s verify.Catalog) {
	_, err := s.GetTemplate(ctx(), newID())
	requireNotFound(t, err, "GetTemplate of an unknown ID")
	requireNotFound(t, s.SetTemplateStatus(ctx(), newID(), verify.TemplateApproved, ""), "SetTemplateStatus of an unknown ID")

	t1 := verify.Template{ID: newID(), Name: "login", Channel: "sms", Body: "Code {code}", Language: "pt-BR",
		Status: verify.TemplatePending, CreatedAt: at(5 * time.Second)}
	t2 := verify.Template{ID: newID(), Name: "mail", Channel: "email", Body: "Your code: {code}\nBye", Language: "en",
		Status: verify.TemplatePending, CreatedAt: at(time.Second)}
	require.NoError(t, s.CreateTemplate(ctx(), t1))
	require.NoError(t, s.CreateTemplate(ctx(), t2))

	got, err := s.GetTemplate(ctx(), t1.ID)
	require.NoError(t, err)
	sameTime(t, t1.CreatedAt, got.CreatedAt, "Template.CreatedAt")
	got.CreatedAt = t1.CreatedAt
	assert.Equal(t, t1, got)

	require.NoError(t, s.SetTemplateStatus(ctx(), t1.ID, verify.TemplateRejected, "brand name missing"))
	got, err = s.GetTemplate(ctx(), t1.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.TemplateRejected, got.Status)
	assert.Equal(t, "brand name missing", got.Reason)

	require.NoError(t, s.SetTemplateStatus(ctx(), t1.ID, verify.TemplateApproved, ""))
	got, err = s.GetTemplate(ctx(), t1.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.TemplateApproved, got.Status)
	assert.Equal(t, "", got.Reason)

	list, err := s.ListTemplates(ctx())
	require.NoError(t, err)
	require.Len(t, list, 2)
	assert.Equal(t, t2.ID, list[0].ID, "oldest CreatedAt first")
	assert.Equal(t, t1.ID, list[1].ID)
}

// cloneFlow returns a copy of f that shares no slice with it.
func cloneFlow(f verify.Flow) verify.Flow {
	f.Steps = append([]verify.Step(nil), f.Steps...)
	f.AllowedIPs = append([]string(nil), f.AllowedIPs...)
	f.AllowedCountries = append([]string(nil), f.AllowedCountries...)
	f.DeniedCountries = append([]string(nil), f.DeniedCountries...)
	f.DeniedNumberTypes = append([]verify.NumberType(nil), f.DeniedNumberTypes...)
	return f
}

// scribbleFlow overwrites, in place, every element of every slice f holds.
func scribbleFlow(f verify.Flow) {
	for i := range f.Steps {
		f.Steps[i] = verify.Step{Channel: "changed", From: "changed", Template: "changed", After: time.Hour}
	}
	for _, l := range [][]string{f.AllowedIPs, f.AllowedCountries, f.DeniedCountries} {
		for i := range l {
			l[i] = "changed"
		}
	}
	for i := range f.DeniedNumberTypes {
		f.DeniedNumberTypes[i] = verify.NumberMobile
	}
}

// testFlowSlicesNotKept: a store copies the slices of the flows it is
// handed, by CreateFlow and by UpdateFlow, so a caller that reuses them
// afterwards does not change the stored flow.
func testFlowSlicesNotKept(t *testing.T, s verify.Catalog) {
	f := sampleFlow("f")
	want := cloneFlow(f)
	require.NoError(t, s.CreateFlow(ctx(), f))
	scribbleFlow(f)
	got, err := s.GetFlow(ctx(), want.ID)
	require.NoError(t, err)
	assertFlow(t, want, got)

	u := cloneFlow(want)
	u.Name = "f2"
	u.Steps = []verify.Step{{Channel: "voice", From: "+4711111111"}, {Channel: "sms", After: time.Minute}}
	u.AllowedIPs = []string{"192.0.2.0/24"}
	u.AllowedCountries = []string{"DK", "FI"}
	u.DeniedCountries = []string{"IR", "SY"}
	u.DeniedNumberTypes = []verify.NumberType{verify.NumberVoIP}
	want = cloneFlow(u)
	require.NoError(t, s.UpdateFlow(ctx(), u))
	scribbleFlow(u)
	got, err = s.GetFlow(ctx(), want.ID)
	require.NoError(t, err)
	assertFlow(t, want, got)
	list, err := s.ListFlows(ctx())
	require.NoError(t, err)
	require.Len(t, list, 1)
	assertFlow(t, want, list[0])
}
