package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/openverify/verify"
)

// The ThunderSMS-style API (v2), authenticated with
// "Authorization: Bearer <api key>":
//
//	POST /api/v2/verify/send                  channels inline, payload (see thunderSend)
//	GET  /api/v2/verify/check/{id}/{token}    200 {"id","status":"success"|"invalid"|"expired"|"failed"|"OTP already verified"}
//	POST /api/v2/verify/check                 the same with {"id","token"} (keeps the code out of URLs)
//	GET  /api/v2/verify/search/{id}           the verification and its deliveries

// thunderTime is how ThunderSMS writes times (UTC).
const thunderTime = "2006-01-02 15:04:05"

// Defaults and limits from the ThunderSMS reference.
const (
	thunderDefaultTimeout = 120 // seconds
	thunderDefaultWait    = 30  // seconds
	thunderMinTTL         = 30
	thunderMaxTTL         = 1209600
	thunderMaxChannels    = 10
	thunderMaxFlowID      = 64
)

// thunderAdHocName is the name, and so the identity, of the ad-hoc flows
// the ThunderSMS API runs (verify.AdHocFlowID(thunderAdHocName)).
const thunderAdHocName = "thundersms"

// flexInt is a number that may also be written as a string ("5"), since
// the reference types length as a string and shows it as a number.
type flexInt struct {
	V   int
	Set bool
}

func (f *flexInt) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	s := string(b)
	value := "number"
	if len(b) > 0 && b[0] == '"' {
		value = "string"
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return &json.UnmarshalTypeError{Value: value, Type: reflect.TypeFor[int]()}
	}
	f.V, f.Set = n, true
	return nil
}

type thunderChannel struct {
	Name      string `json:"name"`
	From      string `json:"from"`
	Recipient struct {
		To string `json:"to"`
	} `json:"recipient"`
	Order    flexInt `json:"order"`
	Wait     flexInt `json:"wait"`
	Language string  `json:"language"`
	FlowID   string  `json:"flow_id"`
	TTL      flexInt `json:"ttl"`
}

// thunderParams are the send's own parameters. The reference's example
// puts them in "payload", and its parameter table names foreign_id and
// template without saying where: each is taken from payload or from the
// top level of the request.
type thunderParams struct {
	Length    flexInt `json:"length"`
	Timeout   flexInt `json:"timeout"`
	Token     string  `json:"token"`
	IPAddress string  `json:"ip_address"`
	ForeignID string  `json:"foreign_id"`
	Template  string  `json:"template"`
}

type thunderSendRequest struct {
	Channels      []thunderChannel `json:"channels"`
	Payload       thunderParams    `json:"payload"`
	thunderParams                  // the same fields at the top level
}

type thunderSendResponse struct {
	ID        string  `json:"id"`
	Status    string  `json:"status"`
	ForeignID *string `json:"foreign_id"`
	CreatedAt string  `json:"created_at"`
	ExpireAt  string  `json:"expire_at"`
}

type thunderCheckRequest struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

type thunderCheckResponse struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

type thunderSearchChannel struct {
	ID        string `json:"id"`
	To        string `json:"to"`
	From      string `json:"from"`
	Channel   string `json:"channel"`
	EventID   string `json:"event_id"`
	CreatedAt string `json:"created_at"`
	Status    string `json:"status"`
}

type thunderSearchResponse struct {
	ID        string                 `json:"id"`
	To        string                 `json:"to"`
	Reference *string                `json:"reference"`
	Status    string                 `json:"status"`
	CreatedAt string                 `json:"created_at"`
	ExpireAt  string                 `json:"expire_at"`
	Channels  []thunderSearchChannel `json:"channels"`
}

// thunderNames are ThunderSMS's names for the engine's parameters.
var thunderNames = map[string]string{"verify_id": "id", "otp": "payload.token", "OTP": "token", "language": "channels.language"}

// thunderSend starts a verification from the request's channels, which
// run as an ad-hoc flow (verify.SendRequest.Flow) named "thundersms": the
// catalog does not grow however many distinct requests arrive, and every
// send counts as the flow verify.AdHocFlowID("thundersms") for the
// per-flow rate limit, the Duplicates policy and reports. WithAdHocFlow
// sets its other settings (brand, attempts, allow-lists, ...).
// (ThunderSMS's doc says how each field takes effect.)
func (s *server) thunderSend(w http.ResponseWriter, r *http.Request) {
	if !s.requireKey(w, r, "Authorization") {
		return
	}
	var req thunderSendRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	sr, pos, err := s.thunderRequest(req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if sr.IPAddress == "" {
		sr.IPAddress = s.clientIP(r)
	}
	sr.IdempotencyKey = r.Header.Get("Idempotency-Key")
	v, err := s.eng.Send(r.Context(), sr)
	if err != nil {
		s.writeError(w, r, renameParams(stepParams(err, pos), thunderNames))
		return
	}
	resp := thunderSendResponse{ID: v.ID, Status: string(v.Status),
		CreatedAt: v.CreatedAt.UTC().Format(thunderTime), ExpireAt: v.ExpiresAt.UTC().Format(thunderTime)}
	if v.ForeignID != "" {
		resp.ForeignID = &v.ForeignID
	}
	s.writeJSON(w, r, http.StatusOK, resp)
}

func (s *server) thunderCheckPath(w http.ResponseWriter, r *http.Request) {
	if !s.requireKey(w, r, "Authorization") {
		return
	}
	s.thunderCheck(w, r, r.PathValue("id"), r.PathValue("token"))
}

func (s *server) thunderCheckBody(w http.ResponseWriter, r *http.Request) {
	if !s.requireKey(w, r, "Authorization") {
		return
	}
	var req thunderCheckRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	s.thunderCheck(w, r, req.ID, req.Token)
}

// thunderCheck answers the statuses the reference documents with 200, and
// every other refusal in Kaleyra's error envelope.
func (s *server) thunderCheck(w http.ResponseWriter, r *http.Request, id, token string) {
	_, err := s.eng.Check(r.Context(), verify.CheckRequest{VerifyID: id, Code: token, IPAddress: s.clientIP(r)})
	status := ""
	switch {
	case err == nil:
		status = "success"
	case errors.Is(err, verify.ErrInvalidOTP):
		status = "invalid"
	case errors.Is(err, verify.ErrExpired):
		status = "expired"
	case errors.Is(err, verify.ErrAlreadyVerified):
		status = "OTP already verified"
	case errors.Is(err, verify.ErrNotFound):
		status = "failed"
	default:
		s.writeError(w, r, renameParams(err, thunderNames))
		return
	}
	s.writeJSON(w, r, http.StatusOK, thunderCheckResponse{ID: id, Status: status})
}

func (s *server) thunderSearch(w http.ResponseWriter, r *http.Request) {
	if !s.requireKey(w, r, "Authorization") {
		return
	}
	v, err := s.eng.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, renameParams(err, thunderNames))
		return
	}
	resp := thunderSearchResponse{ID: v.ID, To: v.To.Phone, Status: string(v.Status),
		CreatedAt: v.CreatedAt.UTC().Format(thunderTime), ExpireAt: v.ExpiresAt.UTC().Format(thunderTime),
		Channels: make([]thunderSearchChannel, 0, len(v.Deliveries))}
	if resp.To == "" {
		resp.To = v.To.Email
	}
	if v.ForeignID != "" {
		resp.Reference = &v.ForeignID
	}
	for _, d := range v.Deliveries {
		to := v.To.Phone
		if a, _ := s.eng.Addressing(d.Channel); a == verify.ByEmail {
			to = v.To.Email
		}
		resp.Channels = append(resp.Channels, thunderSearchChannel{ID: d.ID, To: to, From: d.From, Channel: d.Channel,
			EventID: d.ProviderID, CreatedAt: d.CreatedAt.UTC().Format(thunderTime), Status: string(d.Status)})
	}
	s.writeJSON(w, r, http.StatusOK, resp)
}

// thunderRequest validates a send request and turns it into the engine's:
// the ad-hoc flow, the recipient, the custom code, the foreign ID and the
// end user's IP address (see thunderSend).
func (s *server) thunderRequest(req thunderSendRequest) (verify.SendRequest, []int, error) {
	p, err := mergeParams(req.Payload, req.thunderParams)
	if err != nil {
		return verify.SendRequest{}, nil, err
	}
	if len(req.Channels) == 0 {
		return verify.SendRequest{}, nil, missingField("channels")
	}
	if len(req.Channels) > thunderMaxChannels {
		return verify.SendRequest{}, nil, invalidParam("channels", "at most %d channels, got %d", thunderMaxChannels, len(req.Channels))
	}
	length, timeout := 6, thunderDefaultTimeout
	if p.Length.Set {
		if p.Length.V < 4 || p.Length.V > 10 {
			return verify.SendRequest{}, nil, invalidParam("payload.length", "payload.length must be 4 to 10, got %d", p.Length.V)
		}
		length = p.Length.V
	}
	if p.Timeout.Set {
		if p.Timeout.V < 1 || p.Timeout.V > 86400 {
			return verify.SendRequest{}, nil, invalidParam("payload.timeout", "payload.timeout must be 1 to 86400 seconds, got %d", p.Timeout.V)
		}
		timeout = p.Timeout.V
	}
	if p.Token != "" && len(p.Token) != length {
		return verify.SendRequest{}, nil, invalidParam("payload.token", "payload.token must have payload.length (%d) characters", length)
	}
	sr := verify.SendRequest{Code: p.Token, ForeignID: p.ForeignID}
	if p.IPAddress != "" {
		ip, ok := maskedIP(p.IPAddress)
		if !ok {
			return verify.SendRequest{}, nil, invalidParam("payload.ip_address", "payload.ip_address must be an IPv4 or IPv6 address, or a masked IPv4 address such as 192.168.*.*")
		}
		sr.IPAddress = ip
	}
	if p.Template != "" {
		if err := s.inlineText(p.Template); err != nil {
			return verify.SendRequest{}, nil, err
		}
	}

	chs, pos, err := s.thunderChannels(req.Channels, &sr.To)
	if err != nil {
		return verify.SendRequest{}, nil, err
	}
	f := s.st.adHoc
	f.Name, f.CodeLength, f.Charset = thunderAdHocName, length, verify.Numeric
	f.Steps = make([]verify.Step, len(chs))
	var last time.Duration // when the last channel is due
	for k, c := range chs {
		st := verify.Step{Channel: c.Name, From: c.From, Text: p.Template, Language: strings.ReplaceAll(c.Language, "_", "-")}
		if k > 0 {
			wait := thunderDefaultWait
			if prev := chs[k-1].Wait; prev.Set {
				wait = prev.V
			}
			st.After = time.Duration(wait) * time.Second
			last += st.After
		}
		f.Steps[k] = st
	}
	f.TTL = last + time.Duration(timeout)*time.Second
	if f.TTL > 24*time.Hour {
		return verify.SendRequest{}, nil, invalidParam("payload.timeout", "the channels' waits (%d s) plus payload.timeout (%d s) must be at most 24 hours", int(last/time.Second), timeout)
	}
	sr.Flow = &f
	return sr, pos, nil
}

// thunderChannels validates the channels, returns them in their order with
// the index each had in the request, and sets the recipient: the phone
// channels' number as to.Phone, the email channels' address as to.Email.
func (s *server) thunderChannels(in []thunderChannel, to *verify.Recipient) ([]thunderChannel, []int, error) {
	type indexed struct {
		c     thunderChannel
		i     int
		order int
	}
	chs := make([]indexed, len(in))
	seen := map[int]bool{}
	for i, c := range in {
		param := fmt.Sprintf("channels[%d]", i)
		order := i
		if c.Order.Set {
			order = c.Order.V
		}
		if order < 0 || seen[order] {
			return nil, nil, invalidParam(param+".order", "each channel needs its own order, 0 or more")
		}
		seen[order] = true
		if c.Name == "" {
			return nil, nil, missingField(param + ".name")
		}
		addressing, ok := s.eng.Addressing(c.Name)
		if !ok {
			return nil, nil, &verify.Error{Code: verify.ErrUnknownChannel.Code, Type: verify.TypeRequest,
				Parameter: param + ".name", Message: "channel " + strconv.Quote(c.Name) + " is not registered"}
		}
		if c.Wait.Set && (c.Wait.V < 0 || c.Wait.V > 86400) {
			return nil, nil, invalidParam(param+".wait", "wait must be 0 to 86400 seconds, got %d", c.Wait.V)
		}
		if c.TTL.Set && (c.TTL.V < thunderMinTTL || c.TTL.V > thunderMaxTTL) {
			return nil, nil, invalidParam(param+".ttl", "ttl must be %d to %d seconds, got %d", thunderMinTTL, thunderMaxTTL, c.TTL.V)
		}
		if len(c.FlowID) > thunderMaxFlowID {
			return nil, nil, invalidParam(param+".flow_id", "flow_id must be at most %d characters", thunderMaxFlowID)
		}
		if c.From != "" && !s.senderAllowed(c.From) {
			return nil, nil, invalidParam(param+".from", "sender ID %q is not allowed on this server; leave from out to use the channel's own sender", c.From)
		}
		addr := strings.TrimSpace(c.Recipient.To)
		if addr == "" {
			return nil, nil, missingField(param + ".recipient.to")
		}
		if addressing == verify.ByEmail {
			if to.Email != "" && to.Email != addr {
				return nil, nil, invalidParam(param+".recipient.to", "every email channel must have the same recipient")
			}
			to.Email = addr
		} else {
			addr = e164ish(addr)
			if to.Phone != "" && to.Phone != addr {
				return nil, nil, invalidParam(param+".recipient.to", "every phone channel must have the same recipient")
			}
			to.Phone = addr
		}
		chs[i] = indexed{c, i, order}
	}
	slices.SortStableFunc(chs, func(a, b indexed) int { return a.order - b.order })
	out, pos := make([]thunderChannel, len(chs)), make([]int, len(chs))
	for k, c := range chs {
		out[k], pos[k] = c.c, c.i
	}
	return out, pos, nil
}

// stepParams names an engine error about the ad-hoc flow's step k (a
// channel's language the engine cannot read, a text it cannot render, ...)
// after the request's field: channels[i] for the channel that became step
// k (its name for the step's channel), payload.template for the step's
// text. In this API the flow is the request, so a flow error (E806) is a
// parameter error (E809), and a text error a template error (E807).
func stepParams(err error, pos []int) error {
	ve, ok := verify.AsError(err)
	if !ok || !strings.HasPrefix(ve.Parameter, "steps[") {
		return err
	}
	n, field, _ := strings.Cut(strings.TrimPrefix(ve.Parameter, "steps["), "]")
	k, perr := strconv.Atoi(n)
	if perr != nil || k < 0 || k >= len(pos) {
		return err
	}
	c := *ve
	c.Parameter = fmt.Sprintf("channels[%d]", pos[k])
	switch field {
	case ".text":
		c.Parameter, c.Code = "payload.template", verify.ErrInvalidTemplate.Code
	case ".channel":
		c.Parameter += ".name"
	default:
		c.Parameter += field
	}
	if c.Code == verify.ErrInvalidFlow.Code {
		c.Code = verify.ErrInvalidParameter.Code
	}
	return &c
}

// mergeParams takes each parameter from payload, or else from the top
// level; a parameter given in both places must agree.
func mergeParams(payload, top thunderParams) (thunderParams, error) {
	out := payload
	str := func(name string, p *string, t string) error {
		switch {
		case t == "":
		case *p == "":
			*p = t
		case *p != t:
			return invalidParam(name, "%s and payload.%s differ; give one", name, name)
		}
		return nil
	}
	num := func(name string, p *flexInt, t flexInt) error {
		switch {
		case !t.Set:
		case !p.Set:
			*p = t
		case p.V != t.V:
			return invalidParam(name, "%s and payload.%s differ; give one", name, name)
		}
		return nil
	}
	for _, err := range []error{
		num("length", &out.Length, top.Length),
		num("timeout", &out.Timeout, top.Timeout),
		str("token", &out.Token, top.Token),
		str("ip_address", &out.IPAddress, top.IPAddress),
		str("foreign_id", &out.ForeignID, top.ForeignID),
		str("template", &out.Template, top.Template),
	} {
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// maskedIP parses an IP address, or an IPv4 address masked by whole octets
// from the right ("192.168.*.*"), which becomes its network's first
// address ("192.168.0.0").
func maskedIP(s string) (string, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String(), true
	}
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] == "*" {
		return "", false
	}
	masked := false
	for i, p := range parts {
		switch {
		case p == "*":
			parts[i], masked = "0", true
		case masked:
			return "", false // "192.*.1.*": only whole trailing octets
		}
	}
	a, err := netip.ParseAddr(strings.Join(parts, "."))
	if err != nil || !a.Is4() {
		return "", false
	}
	return a.String(), true
}

// inlineText applies the InlinePolicy to a request's own message text:
// refused with E917 unless the policy allows texts, then with E807 if it
// is too long or does not carry the code. The engine checks the text's
// placeholders again when it validates the flow.
func (s *server) inlineText(text string) error {
	pol := s.st.inline
	if !pol.Text {
		return &verify.Error{Code: verify.ErrTemplateNotApproved.Code, Type: verify.ErrTemplateNotApproved.Type,
			Parameter: "payload.template", Message: "a request's own message text is not allowed on this server; the built-in or approved texts are used when template is left out"}
	}
	limit := pol.MaxText
	if limit <= 0 {
		limit = defaultMaxText
	}
	limit = min(limit, 1600)
	if n := utf8.RuneCountInString(text); n > limit {
		return &verify.Error{Code: verify.ErrInvalidTemplate.Code, Type: verify.TypeRequest, Parameter: "payload.template",
			Message: fmt.Sprintf("template must be at most %d characters, got %d", limit, n)}
	}
	if !strings.Contains(text, "{token}") && !strings.Contains(text, "{code}") {
		return &verify.Error{Code: verify.ErrInvalidTemplate.Code, Type: verify.TypeRequest, Parameter: "payload.template",
			Message: "template must contain the {token} placeholder"}
	}
	return nil
}

// senderAllowed reports whether InlinePolicy.Senders allows a request's
// sender ID.
func (s *server) senderAllowed(from string) bool {
	for _, a := range s.st.inline.Senders {
		if a == "*" || a == from {
			return true
		}
	}
	return false
}

// e164ish puts a "+" before a number written as bare digits with its
// country code ("9189195xxxx"), as the ThunderSMS examples write them.
func e164ish(s string) string {
	if s == "" || s[0] == '+' {
		return s
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return s
		}
	}
	if strings.HasPrefix(s, "00") {
		return "+" + s[2:]
	}
	return "+" + s
}
