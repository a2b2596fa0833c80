package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openverify/verify"
)

// The ThunderSMS-style API (v2), authenticated with
// "Authorization: Bearer <api key>":
//
//	POST /api/v2/verify/send                  channels inline, payload
//	GET  /api/v2/verify/check/{id}/{token}    200 {"id","status":"success"|"invalid"|"expired"|"failed"|"OTP already verified"}
//	POST /api/v2/verify/check                 the same with {"id","token"} (keeps the code out of URLs)
//	GET  /api/v2/verify/search/{id}           the verification and its deliveries
//
// The inline channels become a flow, found again by a hash of its content
// so that repeated identical requests reuse one flow.

// thunderTime is how ThunderSMS writes times (UTC).
const thunderTime = "2006-01-02 15:04:05"

// Defaults from the ThunderSMS reference.
const (
	thunderDefaultTimeout = 120 // seconds
	thunderDefaultWait    = 30  // seconds
)

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
	Order flexInt `json:"order"`
	Wait  flexInt `json:"wait"`
	// Language is the language the message (or call) is in, such as
	// "en_US"; the first channel's is used for the whole verification.
	Language string `json:"language"`
	// FlowID (a voice IVR flow) and TTL (a Viber message's lifetime) are
	// accepted for compatibility; TTL is range-checked, neither is used.
	FlowID string  `json:"flow_id"`
	TTL    flexInt `json:"ttl"`
}

type thunderPayload struct {
	Length    flexInt `json:"length"`
	Timeout   flexInt `json:"timeout"`
	Token     string  `json:"token"`
	IPAddress string  `json:"ip_address"`
	ForeignID string  `json:"foreign_id"`
	// Template is a custom message; {token} (or {code}) is replaced by
	// the code.
	Template string `json:"template"`
}

type thunderSendRequest struct {
	Channels []thunderChannel `json:"channels"`
	Payload  thunderPayload   `json:"payload"`
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

// thunderParams are ThunderSMS's names for the engine's parameters.
var thunderParams = map[string]string{"verify_id": "id", "otp": "payload.token", "OTP": "token", "language": "channels.language"}

func thunderError(parameter, format string, args ...any) *verify.Error {
	return &verify.Error{Code: verify.ErrInvalidParameter.Code, Type: verify.TypeRequest, Parameter: parameter,
		Message: fmt.Sprintf(format, args...)}
}

func thunderMissing(parameter string) *verify.Error {
	return &verify.Error{Code: verify.ErrMissingField.Code, Type: verify.TypeRequest, Parameter: parameter,
		Message: parameter + " field is mandatory"}
}

func (s *server) thunderSend(w http.ResponseWriter, r *http.Request) {
	if !s.requireKey(w, r, "Authorization") {
		return
	}
	var req thunderSendRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	spec, to, lang, err := s.inlineSpec(req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ip := s.clientIP(r)
	if req.Payload.IPAddress != "" {
		a, err := netip.ParseAddr(req.Payload.IPAddress)
		if err != nil {
			s.writeError(w, r, thunderError("payload.ip_address", "payload.ip_address must be an IPv4 or IPv6 address"))
			return
		}
		ip = a.Unmap().String()
	}
	send := func() (verify.Verification, error) {
		flowID, err := s.inlineFlow(r.Context(), spec)
		if err != nil {
			return verify.Verification{}, err
		}
		return s.eng.Send(r.Context(), verify.SendRequest{
			FlowID: flowID, To: to, Code: req.Payload.Token, ForeignID: req.Payload.ForeignID,
			IPAddress: ip, Language: lang, IdempotencyKey: r.Header.Get("Idempotency-Key"),
		})
	}
	v, err := send()
	if ve, ok := verify.AsError(err); ok && ve.Code == verify.ErrNotFound.Code && ve.Parameter == "flow_id" {
		s.inline.forget(spec.key) // an admin deleted the flow: make it again
		v, err = send()
	}
	if err != nil {
		s.writeError(w, r, renameParams(err, thunderParams))
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
		s.writeError(w, r, renameParams(err, thunderParams))
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
		s.writeError(w, r, renameParams(err, thunderParams))
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
		if s.addressing[d.Channel] == verify.ByEmail {
			to = v.To.Email
		}
		resp.Channels = append(resp.Channels, thunderSearchChannel{ID: d.ID, To: to, From: d.From, Channel: d.Channel,
			EventID: d.ProviderID, CreatedAt: d.CreatedAt.UTC().Format(thunderTime), Status: string(d.Status)})
	}
	s.writeJSON(w, r, http.StatusOK, resp)
}

// inlineSpec is a flow described inline by a send request.
type inlineSpec struct {
	key      string // hash of the content
	flow     verify.Flow
	template string
}

// inlineSpec validates a send request's channels and payload and turns
// them into a flow: steps in the channels' order, each step after the
// first waiting the previous channel's wait (the time to wait before
// trying the alternate channel), the code length and validity from the
// payload. Steps that would fall due when the code has already expired
// are dropped. It also returns the recipient (phone channels' "to" as the
// mobile, email channels' as the email) and the first language given.
func (s *server) inlineSpec(req thunderSendRequest) (inlineSpec, verify.Recipient, string, error) {
	var (
		spec inlineSpec
		to   verify.Recipient
		lang string
	)
	if len(req.Channels) == 0 {
		return spec, to, lang, thunderMissing("channels")
	}
	if len(req.Channels) > 10 {
		return spec, to, lang, thunderError("channels", "at most 10 channels, got %d", len(req.Channels))
	}
	p := req.Payload
	length, timeout := 6, thunderDefaultTimeout
	if p.Length.Set {
		if p.Length.V < 4 || p.Length.V > 10 {
			return spec, to, lang, thunderError("payload.length", "payload.length must be 4 to 10, got %d", p.Length.V)
		}
		length = p.Length.V
	}
	if p.Timeout.Set {
		if p.Timeout.V < 1 || p.Timeout.V > 86400 {
			return spec, to, lang, thunderError("payload.timeout", "payload.timeout must be 1 to 86400 seconds, got %d", p.Timeout.V)
		}
		timeout = p.Timeout.V
	}
	if p.Token != "" && len(p.Token) != length {
		return spec, to, lang, thunderError("payload.token", "payload.token must have payload.length (%d) characters", length)
	}

	type indexed struct {
		c     thunderChannel
		i     int
		order int
	}
	chs := make([]indexed, len(req.Channels))
	seen := map[int]bool{}
	for i, c := range req.Channels {
		param := fmt.Sprintf("channels[%d]", i)
		order := i
		if c.Order.Set {
			order = c.Order.V
		}
		if order < 0 || seen[order] {
			return spec, to, lang, thunderError(param+".order", "each channel needs its own order, 0 or more")
		}
		seen[order] = true
		if c.Name == "" {
			return spec, to, lang, thunderMissing(param + ".name")
		}
		if _, ok := s.addressing[c.Name]; !ok {
			return spec, to, lang, &verify.Error{Code: verify.ErrUnknownChannel.Code, Type: verify.TypeRequest,
				Parameter: param + ".name", Message: "channel " + strconv.Quote(c.Name) + " is not registered"}
		}
		if c.Wait.Set && (c.Wait.V < 0 || c.Wait.V > 86400) {
			return spec, to, lang, thunderError(param+".wait", "wait must be 0 to 86400 seconds, got %d", c.Wait.V)
		}
		if c.TTL.Set && (c.TTL.V < 30 || c.TTL.V > 1209600) {
			return spec, to, lang, thunderError(param+".ttl", "ttl must be 30 to 1209600 seconds, got %d", c.TTL.V)
		}
		addr := strings.TrimSpace(c.Recipient.To)
		if addr == "" {
			return spec, to, lang, thunderMissing(param + ".recipient.to")
		}
		if s.addressing[c.Name] == verify.ByEmail {
			if to.Email != "" && to.Email != addr {
				return spec, to, lang, thunderError(param+".recipient.to", "every email channel must have the same recipient")
			}
			to.Email = addr
		} else {
			addr = e164ish(addr)
			if to.Phone != "" && to.Phone != addr {
				return spec, to, lang, thunderError(param+".recipient.to", "every phone channel must have the same recipient")
			}
			to.Phone = addr
		}
		if lang == "" && c.Language != "" {
			lang = strings.ReplaceAll(c.Language, "_", "-")
		}
		chs[i] = indexed{c, i, order}
	}
	slices.SortStableFunc(chs, func(a, b indexed) int { return a.order - b.order })

	ttl := time.Duration(timeout) * time.Second
	spec.flow = verify.Flow{CodeLength: length, TTL: ttl, Description: "Made by POST /api/v2/verify/send."}
	var elapsed time.Duration
	for k, c := range chs {
		var after time.Duration
		if k > 0 {
			wait := thunderDefaultWait
			if prev := chs[k-1].c.Wait; prev.Set {
				wait = prev.V
			}
			after = time.Duration(wait) * time.Second
		}
		if elapsed+after >= ttl {
			break // the code would have expired; so would every later step
		}
		elapsed += after
		spec.flow.Steps = append(spec.flow.Steps, verify.Step{Channel: c.c.Name, From: c.c.From, After: after})
	}
	spec.template = p.Template

	// The key covers everything that makes the flow, and nothing about
	// the recipient.
	canon, _ := json.Marshal(struct {
		Length   int
		TTL      time.Duration
		Steps    []verify.Step
		Template string
	}{length, ttl, spec.flow.Steps, spec.template})
	sum := sha256.Sum256(canon)
	spec.key = hex.EncodeToString(sum[:8])
	spec.flow.Name = "inline-" + spec.key
	return spec, to, lang, nil
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

// inlineFlows caches the IDs of the flows made for inline channels.
type inlineFlows struct {
	mu  sync.Mutex
	ids map[string]string // key → flow ID
}

func (c *inlineFlows) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.ids, key)
}

// inlineFlow returns the ID of the flow for spec: from the cache, else a
// flow of the same name in the store (made earlier, or by another
// instance), else a new one, with its approved templates if spec has a
// custom text.
func (s *server) inlineFlow(ctx context.Context, spec inlineSpec) (string, error) {
	c := &s.inline
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.ids[spec.key]; ok {
		return id, nil
	}
	flows, err := s.eng.Flows(ctx)
	if err != nil {
		return "", err
	}
	for _, f := range flows {
		if f.Name == spec.flow.Name {
			c.ids[spec.key] = f.ID
			return f.ID, nil
		}
	}
	f := spec.flow
	f.Steps = slices.Clone(f.Steps)
	if spec.template != "" {
		ids := map[string]string{}
		for i, st := range f.Steps {
			if ids[st.Channel] == "" {
				t, err := s.eng.CreateTemplate(ctx, verify.Template{Name: f.Name + "-" + st.Channel, Channel: st.Channel, Body: spec.template})
				if err != nil {
					return "", renameParams(err, map[string]string{"body": "payload.template", "language": "channels.language"})
				}
				if err := s.eng.ApproveTemplate(ctx, t.ID); err != nil {
					return "", err
				}
				ids[st.Channel] = t.ID
			}
			f.Steps[i].Template = ids[st.Channel]
		}
	}
	f, err = s.eng.CreateFlow(ctx, f)
	if err != nil {
		return "", err
	}
	c.ids[spec.key] = f.ID
	return f.ID, nil
}
