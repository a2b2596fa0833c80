package httpapi

import (
	"cmp"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// The console's protection page: the recipients with wrong codes counted
// against them (locked out, held back by a delay, or neither yet), with
// Unlock, and the number prefixes the pumping guard blocked, with Unblock.
// Recipients are masked unless the operator asks to see them; a listed
// recipient can be unlocked from the list only then (the page carries no
// hidden full numbers), or by typing the number.

// lockoutRow is a lockout as the page shows it.
type lockoutRow struct {
	verify.Lockout
	// Shown is the recipient as displayed, masked or not; Full is the
	// recipient for the Unlock form, only when unmasked.
	Shown, Full string
}

// protectionData is the protection page's.
type protectionData struct {
	Lockouts   []lockoutRow
	LockoutsTo string // the next page of lockouts
	Blocks     []verify.Block
	BlocksTo   string
	Unmasked   bool
	Notice     string
	Error      string
	// Recipient is the typed Unlock form's value, when it needs correcting.
	Recipient string
	// Refused are the refusals of the last 24 hours by reason, most first.
	Refused []refusalRow
}

// refusalRow is a reason and how many requests it refused.
type refusalRow struct {
	Reason string
	Count  int
}

// byReason adds the refusals up by reason, most refused first (ties by
// reason).
func byReason(refusals []verify.RefusalCount) []refusalRow {
	sums := map[string]int{}
	for _, r := range refusals {
		sums[r.Reason] += r.Count
	}
	out := make([]refusalRow, 0, len(sums))
	for reason, n := range sums {
		out = append(out, refusalRow{reason, n})
	}
	slices.SortFunc(out, func(a, b refusalRow) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Reason, b.Reason))
	})
	return out
}

func (s *server) protectionPage(w http.ResponseWriter, r *http.Request, c consoleReq) {
	s.showProtection(w, r, c, http.StatusOK, "", "")
}

func (s *server) showProtection(w http.ResponseWriter, r *http.Request, c consoleReq, status int, errMsg, recipient string) {
	ctx := r.Context()
	v := r.URL.Query()
	data := protectionData{Unmasked: unmasked(v), Error: errMsg, Recipient: recipient}
	lockouts, err := s.eng.Lockouts(ctx, v.Get("lockouts"), consolePageSize)
	if err == nil {
		var blocks verify.BlockPage
		blocks, err = s.eng.Blocks(ctx, v.Get("blocks"), consolePageSize)
		data.Blocks = blocks.Blocks
		if blocks.Next != "" {
			data.BlocksTo = pageLink("protection", v, "blocks", blocks.Next)
		}
	}
	switch {
	case errors.Is(err, verify.ErrListingUnsupported):
		data.Notice = "The protection counters' backend cannot list them (verify.CounterLister); Unlock and Unblock still work."
	case err != nil:
		s.engineError(w, r, c, err)
		return
	}
	for _, l := range lockouts.Lockouts {
		row := lockoutRow{Lockout: l}
		shown := l.To
		if !data.Unmasked {
			shown = verify.MaskRecipient(shown)
		} else {
			row.Full = strings.TrimSpace(l.To.Phone + l.To.Email)
		}
		row.Shown = strings.TrimSpace(shown.Phone + " " + shown.Email)
		data.Lockouts = append(data.Lockouts, row)
	}
	if lockouts.Next != "" {
		data.LockoutsTo = pageLink("protection", v, "lockouts", lockouts.Next)
	}
	to := s.eng.Now().Truncate(time.Hour).Add(time.Hour)
	if refusals, err := s.eng.Refusals(ctx, to.Add(-24*time.Hour), to); err == nil {
		data.Refused = byReason(refusals)
	} else if !errors.Is(err, verify.ErrListingUnsupported) {
		s.engineError(w, r, c, err)
		return
	}
	if data.Unmasked && len(data.Lockouts) > 0 && status == http.StatusOK {
		s.audit(r, c.who, "lockouts.reveal", "", "")
	}
	s.render(w, r, status, "protection", c, consolePage{Title: "Protection", Nav: "protection", Flash: flashOf(r), Data: data})
}

// recipientOf reads a typed recipient: an email address, or a phone
// number.
func recipientOf(s string) verify.Recipient {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "@") {
		return verify.Recipient{Email: s}
	}
	return verify.Recipient{Phone: s}
}

// unlockForm lifts a recipient's lockout.
func (s *server) unlockForm(w http.ResponseWriter, r *http.Request, c consoleReq) {
	typed := r.PostForm.Get("recipient")
	to := recipientOf(typed)
	if err := s.eng.Unlock(r.Context(), to); err != nil {
		ve, ok := s.refusal(w, r, c, err)
		if !ok {
			return
		}
		s.showProtection(w, r, c, ve.HTTPStatus(), ve.Message, typed)
		return
	}
	m := verify.MaskRecipient(to)
	s.audit(r, c.who, "recipient.unlock", strings.TrimSpace(m.Phone+m.Email), "")
	redirectFlash(w, r, consolePath+"protection", "unlocked")
}

// unblockForm lifts the block of a number prefix.
func (s *server) unblockForm(w http.ResponseWriter, r *http.Request, c consoleReq) {
	prefix := strings.TrimSpace(r.PostForm.Get("prefix"))
	if err := s.eng.Unblock(r.Context(), prefix); err != nil {
		ve, ok := s.refusal(w, r, c, err)
		if !ok {
			return
		}
		s.showProtection(w, r, c, ve.HTTPStatus(), ve.Message, "")
		return
	}
	s.audit(r, c.who, "prefix.unblock", prefix, "")
	redirectFlash(w, r, consolePath+"protection", "unblocked")
}
