package httpapi

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/openverify/verify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The console in a real browser: headless Chromium (Debian's chromium
// package; CHROMIUM names another binary), driven with chromedp. Without
// one the tests skip, except under CI=true, where they fail.
//
//	go test ./httpapi -run Browser -screenshots
//
// also writes the README's screenshots to docs/screenshots.
var screenshots = flag.Bool("screenshots", false, "write the console's screenshots to docs/screenshots")

// chromium is the browser binary, or "".
func chromium() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser is a headless Chromium tab for one test, with what the pages
// logged as errors (a Content-Security-Policy violation, a failed load).
type browser struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromium()
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Chromium to run the browser tests (install Debian's chromium package, or set CHROMIUM)")
		}
		t.Skip("no Chromium (install Debian's chromium package, or set CHROMIUM): browser tests skipped")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-gpu", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
	b := &browser{ctx: ctx}
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *log.EventEntryAdded:
			// The form answered 400 on purpose is the one error a
			// page may log.
			if ev.Entry.Level == log.EntryLevelError && !strings.HasSuffix(ev.Entry.URL, "/flows/new") {
				msg = fmt.Sprintf("%s: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
			}
		case *runtime.EventExceptionThrown:
			msg = ev.ExceptionDetails.Text
		}
		if msg != "" {
			b.mu.Lock()
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	}))
	_, err := chromedp.Call(ctx, log.Enable, cdp.Empty{})
	require.NoError(t, err)
	_, err = chromedp.Call(ctx, runtime.Enable, cdp.Empty{})
	require.NoError(t, err)
	return b
}

// do runs actions, failing the test on an error.
func (b *browser) do(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(b.ctx, actions...))
}

// text is the trimmed text of the first element sel matches.
func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(t, err, sel)
	return strings.TrimSpace(s)
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	require.NoError(t, err, expr)
	return v
}

// count is how many elements sel matches.
func (b *browser) count(t *testing.T, sel string) int {
	t.Helper()
	return eval[int](t, b, fmt.Sprintf("document.querySelectorAll(%q).length", sel))
}

// shot writes a full-page screenshot of the page to docs/screenshots/name
// when the test runs with -screenshots.
func (b *browser) shot(t *testing.T, name string) {
	t.Helper()
	if !*screenshots {
		return
	}
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	dir := filepath.Join("..", "docs", "screenshots")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), png, 0o644))
}

// pageErrors is what the pages logged as errors so far.
func (b *browser) pageErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// TestBrowserConsole signs in with the keyboard alone, creates and
// approves a template, creates a flow with two steps that uses it, starts
// verifications through the API and watches them appear on the overview,
// finds one and reads its timeline, cancels another, and checks that a
// narrow window still shows everything and that no page broke its
// Content-Security-Policy.
func TestBrowserConsole(t *testing.T) {
	b := newBrowser(t)
	h := newHarness(t, WithSessionLifetime(72*time.Hour)) // the test moves the clock a day on
	base := h.srv.URL + consolePath

	// Sign in with the keyboard: the skip link, then the name and key
	// fields in tab order, then Enter.
	b.do(t, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#sign-in")))
	loc, err := chromedp.Run(b.ctx, chromedp.Location())
	require.NoError(t, err)
	assert.Contains(t, loc, "/admin/console/sign-in?next=")
	b.do(t,
		chromedp.KeyEvent(kb.Tab), // the skip link
		chromedp.KeyEvent(kb.Tab), // name
		chromedp.KeyEvent("Ana Operator"),
		chromedp.KeyEvent(kb.Tab), // key
		chromedp.KeyEvent(testAdminKey),
		chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.CSS("#who")),
	)
	assert.Equal(t, "Ana Operator", b.text(t, "#who"))

	// A template, approved.
	b.do(t,
		chromedp.Navigate(base+"templates"),
		chromedp.SendKeys(chromedp.CSS("#t-name"), "login-sms"),
		chromedp.SetValue(chromedp.CSS("#t-channel"), "sms"),
		chromedp.SendKeys(chromedp.CSS("#t-body"), "{brand}: {code} is your login code. It expires in {minutes} minutes."),
		chromedp.Click(chromedp.CSS("#create-template")),
		chromedp.WaitVisible(chromedp.CSS("#flash")),
	)
	assert.Equal(t, "Template created; it is pending until approved.", b.text(t, "#flash"))
	b.do(t,
		chromedp.Click(chromedp.CSS(`#templates-pending tr[data-name="login-sms"] button.approve`)),
		chromedp.WaitVisible(chromedp.CSS(`#templates-approved tr[data-name="login-sms"]`)),
	)
	assert.Equal(t, 0, b.count(t, "#templates-pending tr.template"))
	b.shot(t, "templates.png")

	// A flow: SMS with the template, then a voice call 30 s later. First
	// with a delay the form cannot read, shown beside its field.
	b.do(t,
		chromedp.Navigate(base+"flows/new"),
		chromedp.SendKeys(chromedp.CSS("#name"), "login"),
		chromedp.SendKeys(chromedp.CSS("#brand"), "Acme"),
		chromedp.SetValue(chromedp.CSS(`[id="steps[0].channel"]`), "sms"),
		chromedp.SetValue(chromedp.CSS(`[id="steps[1].channel"]`), "voice"),
		chromedp.SendKeys(chromedp.CSS(`[id="steps[1].after"]`), "soon"),
		chromedp.Click(chromedp.CSS("#save-flow")),
		chromedp.WaitVisible(chromedp.CSS(`[id="steps[1].after-error"]`)),
	)
	assert.Contains(t, b.text(t, `[id="steps[1].after-error"]`), "Enter a duration")
	tmplValue := eval[string](t, b, `[...document.querySelectorAll('[id="steps[0].template"] option')].find(o => o.text.startsWith("login-sms")).value`)
	b.do(t,
		chromedp.SetValue(chromedp.CSS(`[id="steps[0].template"]`), tmplValue),
		chromedp.SetValue(chromedp.CSS(`[id="steps[1].after"]`), "30s"),
	)
	b.do(t,
		chromedp.Click(chromedp.CSS("#save-flow")),
		chromedp.WaitVisible(chromedp.CSS("#flash")),
	)
	assert.Equal(t, "Flow created.", b.text(t, "#flash"))
	f := h.flowByName("login")
	require.Len(t, f.Steps, 2)
	assert.Equal(t, tmplValue, f.Steps[0].Template)
	assert.Equal(t, 30*time.Second, f.Steps[1].After)
	assert.Equal(t, "sms → voice after 30s", b.text(t, fmt.Sprintf(`tr[data-id=%q] .route`, f.ID)))
	b.do(t, chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-id=%q] a`, f.ID))), chromedp.WaitVisible(chromedp.CSS("#flow-form")))
	assert.Equal(t, "30s", eval[string](t, b, `document.getElementById("steps[1].after").value`))
	b.shot(t, "flow-editor.png")

	// Verifications started through the API appear on the overview.
	b.do(t, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#total")))
	assert.Equal(t, "0", b.text(t, "#total"))
	ids, _ := h.seed()
	b.do(t, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#total")))
	assert.Equal(t, "3", b.text(t, "#total"))
	assert.Equal(t, 3, b.count(t, "#recent tr.verification"))
	assert.Equal(t, 1, b.count(t, fmt.Sprintf(`#recent tr[data-id=%q]`, ids[0])))

	// A day of traffic on the two-step flow, for the charts: every hour
	// some verifications, most verified within seconds, some after the
	// voice call; and refusals, as the engine writes them.
	total := 3 + dayOfTraffic(t, h, f.ID)
	b.do(t, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#chart-volume svg")))
	assert.Equal(t, strconv.Itoa(total), b.text(t, "#total"))
	for id, points := range map[string]int{"#chart-volume svg.line circle.point": 72, "#chart-conversion svg.line circle.point": 24,
		"#chart-steps svg.bars g.bar": 2, "#chart-ttv svg.bars g.bar": 2, "#chart-refused svg.bars g.bar": 2} {
		assert.Equal(t, points, b.count(t, id), id)
	}
	assert.Equal(t, 12, b.count(t, "#chart-funnel svg.bars g.bar"), "sms, voice and email: four figures each")
	b.shot(t, "overview.png")

	// A verification on the two-step flow: a wrong code, the voice call
	// 30 s later, its receipt, then the right code. Its timeline shows
	// each, in order; the search finds it by foreign ID.
	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: verify.Recipient{Phone: "+4741234567"}, ForeignID: "order-1042"})
	require.NoError(t, err)
	code := h.code("sms")
	h.clock.Add(8 * time.Second)
	_, err = h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: wrongCode(code)})
	require.Error(t, err)
	h.clock.Add(25 * time.Second)
	_, err = h.eng.ProcessDue(h.ctx)
	require.NoError(t, err)
	got, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	require.Len(t, got.Deliveries, 2, "the voice step fired")
	h.clock.Add(4 * time.Second)
	require.NoError(t, h.eng.ReportDelivery(h.ctx, got.Deliveries[1].ID, verify.DeliveryDelivered, ""))
	h.clock.Add(9 * time.Second)
	_, err = h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: h.code("voice")})
	require.NoError(t, err)
	b.do(t,
		chromedp.Navigate(base+"verifications"),
		chromedp.SendKeys(chromedp.CSS("#foreign_id"), "order-1042"),
		chromedp.Click(chromedp.CSS("#search-button")),
		// The search's page: its field's value attribute holds the query,
		// where the form the text was typed into has it only as the
		// field's current value.
		chromedp.WaitVisible(chromedp.CSS(`#foreign_id[value="order-1042"]`)),
	)
	assert.Equal(t, 1, b.count(t, "#results tr.verification"))
	b.do(t,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-id=%q] a`, v.ID))),
		chromedp.WaitVisible(chromedp.CSS("#timeline")),
	)
	assert.Equal(t, "created sent check sent receipt check ended",
		eval[string](t, b, `[...document.querySelectorAll("#timeline li")].map(li => li.dataset.kind).join(" ")`))
	assert.Equal(t, "verified", b.text(t, "#status"))
	b.shot(t, "verification.png")

	// Cancel an open one from its page.
	open, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: verify.Recipient{Phone: "+4741230000"}})
	require.NoError(t, err)
	b.do(t,
		chromedp.Navigate(base+"verifications/"+open.ID),
		chromedp.Click(chromedp.CSS("#cancel")),
		chromedp.WaitVisible(chromedp.CSS("#flash")),
	)
	assert.Equal(t, "Verification canceled.", b.text(t, "#flash"))
	assert.Equal(t, "canceled", b.text(t, "#status"))

	// A locked-out recipient, unlocked by typing the number; a blocked
	// prefix, unblocked from its row.
	now := h.clock.Now()
	_, err = h.store.Take(h.ctx, now, []verify.Take{
		{Key: "fail:+4741234567", Delta: 100, Max: verify.NoLimit, ExpiresAt: now.Add(time.Hour)},
		{Key: "block:prefix:+4790", Delta: 1, Max: verify.NoLimit, ExpiresAt: now.Add(time.Hour)},
	})
	require.NoError(t, err)
	b.do(t, chromedp.Navigate(base+"protection"), chromedp.WaitVisible(chromedp.CSS("#lockouts")))
	assert.Equal(t, "+47******67", b.text(t, "#lockouts tr.lockout.locked .recipient"))
	assert.Equal(t, "locked out", b.text(t, "#lockouts tr.lockout.locked .state"))
	b.shot(t, "protection.png")
	b.do(t,
		chromedp.SendKeys(chromedp.CSS("#unlock-recipient"), "+4741234567"),
		chromedp.Click(chromedp.CSS("#unlock")),
		chromedp.WaitVisible(chromedp.CSS("#flash")),
	)
	assert.Equal(t, 0, b.count(t, "#lockouts tr.lockout.locked"), "the seed's wrong code stays counted; the lockout is gone")
	b.do(t,
		chromedp.Navigate(base+"protection"), // a page without a flash, so the next one's is new
		chromedp.Click(chromedp.CSS(`#blocks tr[data-prefix="+4790"] button.unblock`)),
		chromedp.WaitVisible(chromedp.CSS("#flash")),
	)
	assert.Equal(t, "Prefix unblocked.", b.text(t, "#flash"))
	assert.Equal(t, 0, b.count(t, `#blocks tr[data-prefix="+4790"]`))

	// The audit log has what was done above, newest first.
	b.do(t, chromedp.Navigate(base+"audit"), chromedp.WaitVisible(chromedp.CSS("#audit")))
	assert.Equal(t, "prefix.unblock", b.text(t, "#audit tr.entry:first-child .action"))
	assert.Equal(t, "Ana Operator", b.text(t, "#audit tr.entry:first-child .actor"))
	assert.Equal(t, 1, b.count(t, `#audit tr.entry[data-action="console.sign-in"]`))
	assert.Equal(t, 1, b.count(t, `#audit tr.entry[data-action="template.approve"]`))

	// A phone-sized window: nothing wider than the page but the tables,
	// which scroll inside their own boxes.
	for _, path := range []string{"", "flows", "flows/" + f.ID, "templates", "verifications", "verifications/" + v.ID, "protection", "audit"} {
		b.do(t,
			chromedp.EmulateViewport(360, 740),
			chromedp.Navigate(base+path),
			chromedp.WaitVisible(chromedp.CSS("main")),
		)
		overflow := eval[bool](t, b, `document.documentElement.scrollWidth > window.innerWidth`)
		assert.False(t, overflow, "%s is wider than a 360 px window", "/admin/console/"+path)
	}

	// Sign out: the console asks for the key again.
	b.do(t,
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(base),
		chromedp.Click(chromedp.CSS("#sign-out")),
		chromedp.WaitVisible(chromedp.CSS("#sign-in")),
	)
	assert.Equal(t, "You have signed out.", b.text(t, "#flash"))

	assert.Empty(t, b.pageErrors(), "the pages logged errors (a blocked resource breaks the CSP)")
}

// wrongCode is a code of code's length that is not code.
func wrongCode(code string) string {
	w := strings.Repeat("0", len(code))
	if w == code {
		w = strings.Repeat("1", len(code))
	}
	return w
}

// dayOfTraffic sends verifications on flow over the next 23 hours of the
// harness's clock, checks most of them, lets some wait for the fallback,
// writes two reasons of refusals, and returns how many it started.
func dayOfTraffic(t *testing.T, h *harness, flow string) int {
	t.Helper()
	n := 0
	for hour := range 23 {
		for k := range 3 + (hour*7)%5 {
			v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: flow, To: verify.Recipient{Phone: fmt.Sprintf("+4745%02d%04d", hour, k)}})
			require.NoError(t, err)
			n++
			code := h.code("sms")
			switch {
			case k%4 == 3: // never verified
			case k%3 == 2: // after the voice call
				h.clock.Add(31 * time.Second)
				_, err = h.eng.ProcessDue(h.ctx)
				require.NoError(t, err)
				_, err = h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
				require.NoError(t, err)
			default:
				h.clock.Add(time.Duration(5+k*3) * time.Second)
				_, err = h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
				require.NoError(t, err)
			}
		}
		hourKey := strconv.FormatInt(h.clock.Now().Unix()/3600, 10)
		_, err := h.store.Take(h.ctx, h.clock.Now(), []verify.Take{
			{Key: "stats:refused:" + hourKey + ":limit: codes sent to this recipient", Delta: int64(hour % 4), Max: verify.NoLimit, ExpiresAt: h.clock.Now().Add(48 * time.Hour)},
			{Key: "stats:refused:" + hourKey + ":" + verify.RefusalLocked, Delta: int64(hour % 3), Max: verify.NoLimit, ExpiresAt: h.clock.Now().Add(48 * time.Hour)},
		})
		require.NoError(t, err)
		h.clock.Set(h.clock.Now().Truncate(time.Hour).Add(time.Hour))
	}
	return n
}
