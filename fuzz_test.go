package verify_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/openverify/verify"
)

// requireTyped fails unless err is nil or an *verify.Error.
func requireTyped(t *testing.T, err error, what string) {
	t.Helper()
	if err == nil {
		return
	}
	var ve *verify.Error
	if !errors.As(err, &ve) {
		t.Fatalf("%s: a rejection must be a *verify.Error, got %T: %v", what, err, err)
	}
	if ve.Code == "" || ve.Message == "" || ve.HTTPStatus() < 400 {
		t.Fatalf("%s: incomplete error %#v", what, ve)
	}
}

func FuzzSend(f *testing.F) {
	f.Add("+4712345678", "ana@example.com", "", "", "192.0.2.1", "", "", "order-1")
	f.Add("4712345678", "", "123456", "", "", "en", "key", "")
	f.Add("+47 123", "Ana <ana@example.com>", "12a456", "nope", "::1", "pt-BR", "", "")
	f.Add("", "", "", "", "not-an-ip", "english", "k", "x")
	f.Add("+\x00123456789", "ana@exa\u00e9mple.com", "١٢٣٤٥٦", "", "2001:db8::1", "ar", "", "")
	f.Add("+999999999999999999", "@", "0000000000000", "", "", "-", "", "")
	f.Fuzz(func(t *testing.T, phone, email, code, flowID, ip, lang, key, foreign string) {
		h := newHarness(t)
		flow := h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: time.Minute})
		if flowID == "flow" {
			flowID = flow.ID
		}
		v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: flowID, To: verify.Recipient{Phone: phone, Email: email},
			Code: code, IPAddress: ip, Language: lang, IdempotencyKey: key, ForeignID: foreign})
		requireTyped(t, err, "Send")
		if err != nil {
			if h.sms.Calls()+h.email.Calls() != 0 {
				t.Fatal("a refused Send delivered a message")
			}
			return
		}
		if v.ID == "" || v.Status != verify.StatusSent || v.ForeignID != foreign {
			t.Fatalf("Send accepted but returned %+v", v)
		}
		m, ok := h.sms.Last()
		if !ok || len(m.Code) != flow.CodeLength || !strings.Contains(m.Body, m.Code) {
			t.Fatalf("no well-formed message for an accepted Send: %v", m)
		}
		if code != "" && !strings.EqualFold(m.Code, code) {
			t.Fatalf("custom code not used")
		}
	})
}

func FuzzCheck(f *testing.F) {
	f.Add("", "123456", "")
	f.Add("real", "right", "192.0.2.1")
	f.Add("real", "000000", "")
	f.Add("real", "12 34", "::1")
	f.Add("4d3d0959-805e-43fa-bece-5815ce0795a2", "123456", "")
	f.Add("real-0", "\xff\xfe", "x")
	f.Add("real", strings.Repeat("9", 1000), "")
	f.Fuzz(func(t *testing.T, id, code, ip string) {
		h := newHarness(t)
		h.flow(verify.Step{Channel: "sms"})
		v, real := h.send()
		switch id {
		case "real":
			id = v.ID
		case "real-0":
			id = v.ID + "-0"
		}
		if code == "right" {
			code = real
		}
		got, err := h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: id, Code: code, IPAddress: ip})
		requireTyped(t, err, "Check")
		if err == nil {
			if id != v.ID || !strings.EqualFold(code, real) || got.Status != verify.StatusVerified {
				t.Fatalf("Check(%q, %q) verified: %+v", id, code, got)
			}
		} else if id == v.ID && strings.EqualFold(code, real) {
			t.Fatalf("the right code was refused: %v", err)
		}
		// Whatever happened, the real code still behaves.
		_, err = h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: real})
		if err != nil && !errors.Is(err, verify.ErrAlreadyVerified) {
			t.Fatalf("after Check(%q,%q) the right code got %v", id, code, err)
		}
	})
}

func FuzzCreateFlow(f *testing.F) {
	f.Add("login", 6, 0, int64(time.Minute), 5, "sms", int64(0), "", "203.0.113.0/24", "", "reuse", "en", "")
	f.Add("", -1, 7, int64(-1), -5, "fax", int64(-1), "nope", "300.0.0.1", "NOR", "merge", "english!", "https://x")
	f.Add("x", 10, 1, int64(24*time.Hour), 100, "email", int64(time.Hour), "", "::1", "no", "allow", "pt-BR", "example.com")
	f.Add("x", 4, 0, int64(time.Second), 1, "sms", int64(2*time.Second), "", "", "", "", "", "bad domain")
	f.Fuzz(func(t *testing.T, name string, length, charset int, ttl int64, attempts int, channel string, after int64,
		tpl, ip, country, dup, lang, webOTP string) {
		h := newHarness(t)
		fl := verify.Flow{Name: name, CodeLength: length, Charset: verify.Charset(charset), TTL: time.Duration(ttl),
			MaxAttempts: attempts, Language: lang, Duplicates: verify.DuplicatePolicy(dup),
			Steps: []verify.Step{{Channel: "sms", WebOTPDomain: webOTP}, {Channel: channel, After: time.Duration(after), Template: tpl}}}
		if ip != "" {
			fl.AllowedIPs = []string{ip}
		}
		if country != "" {
			fl.DeniedCountries = []string{country}
		}
		got, err := h.eng.CreateFlow(h.ctx, fl)
		requireTyped(t, err, "CreateFlow")
		flows, lerr := h.eng.Flows(h.ctx)
		if lerr != nil {
			t.Fatal(lerr)
		}
		if err != nil {
			if len(flows) != 0 {
				t.Fatal("a refused flow was stored")
			}
			return
		}
		if len(flows) != 1 || flows[0].ID != got.ID {
			t.Fatalf("accepted flow not stored: %v", flows)
		}
		if got.CodeLength < 4 || got.CodeLength > 10 || got.TTL <= 0 || got.MaxAttempts < 1 {
			t.Fatalf("accepted an invalid flow: %+v", got)
		}
		// An accepted flow can send.
		_, err = h.eng.Send(h.ctx, verify.SendRequest{FlowID: got.ID, To: ana, IPAddress: strings.TrimSuffix(ip, "/24")})
		requireTyped(t, err, "Send on an accepted flow")
	})
}
