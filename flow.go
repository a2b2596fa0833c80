package verify

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Flow is a verification flow, as Kaleyra calls it: how the code looks, how
// long it lives, how many wrong guesses it allows, and the ordered steps that
// deliver it.
type Flow struct {
	// ID is assigned by CreateFlow.
	ID string `json:"id"`
	// Name is mandatory; Description is free text.
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Brand fills the {brand} and {app} placeholders and prefixes the
	// built-in text ("Acme: Your verification code is ..."); may be "".
	Brand string `json:"brand,omitempty"`
	// CodeLength is 4..10. Defaults to 6.
	CodeLength int `json:"code_length"`
	// Charset of generated codes. Defaults to Numeric (the zero value).
	Charset Charset `json:"charset"`
	// TTL is how long a code stays valid, at most 24 hours. Defaults to 5
	// minutes.
	TTL time.Duration `json:"ttl"`
	// MaxAttempts is how many codes may be checked per verification, 1..100.
	// Defaults to 5.
	MaxAttempts int `json:"max_attempts"`
	// Steps deliver the code in order; at least one.
	Steps []Step `json:"steps"`
	// Default marks the flow used when SendRequest.FlowID is "". Setting it
	// unsets it on every other flow.
	Default bool `json:"default"`
	// Language is the language used when a request names none and none can
	// be guessed from the phone number, and when no template exists in the
	// requested one. Defaults to "en".
	Language string `json:"language"`
	// AllowedIPs restricts Send and Check to clients whose IPAddress is in
	// one of these IPv4 or IPv6 addresses or CIDR prefixes
	// ("203.0.113.0/24", "2001:db8::/32"). Empty allows every client.
	AllowedIPs []string `json:"allowed_ips,omitempty"`
	// AllowedCountries, if not empty, lists the only countries (ISO 3166-1
	// alpha-2, "NO") whose phone numbers may receive codes; DeniedCountries
	// lists countries that may not. Both need a PhoneParser that knows
	// countries (package phone). Empty: every country is allowed.
	AllowedCountries []string `json:"allowed_countries,omitempty"`
	DeniedCountries  []string `json:"denied_countries,omitempty"`
	// DeniedNumberTypes refuses numbers of these types, such as
	// NumberPremiumRate and NumberSharedCost. Needs package phone.
	DeniedNumberTypes []NumberType `json:"denied_number_types,omitempty"`
	// Duplicates says what a Send does while the same recipient already has
	// an open verification on this flow. Defaults to DuplicateReuse.
	Duplicates DuplicatePolicy `json:"duplicates,omitempty"`
	// CreatedAt is set by CreateFlow.
	CreatedAt time.Time `json:"created_at"`
}

// Step is one delivery in a flow.
type Step struct {
	// Channel is a registered Channel's Name.
	Channel string `json:"channel"`
	// From is the sender ID, from address or caller ID; "" lets the channel
	// use its own default.
	From string `json:"from,omitempty"`
	// Template is an approved Template's ID for this channel; "" uses the
	// built-in text (or Text).
	Template string `json:"template,omitempty"`
	// Text is the step's own message text, with a Template's placeholders
	// ({code} or {token} is mandatory; {minutes}, {brand}, {app}), at most
	// 1,600 characters. Only an ad-hoc flow (SendRequest.Flow) may carry
	// it: whoever builds the request reviews it, where a catalog flow's
	// texts are Templates, approved before any flow may use them. Text and
	// Template are exclusive.
	Text string `json:"text,omitempty"`
	// Language, if set, is the language of this step's message (a BCP 47
	// tag, "en-US"), over the verification's: a voice call in English
	// after an SMS in the recipient's language, for example. Templates are
	// picked in it, as for the verification's language.
	Language string `json:"language,omitempty"`
	// After is 0 to send this step together with the previous one ("send
	// anyway"), or how long after the previous step to send it, only while
	// the verification is still open ("send after time interval"). The first
	// step's After must be 0, and every step must be due before the code
	// expires.
	After time.Duration `json:"after"`
	// WebOTPDomain, for SMS steps, appends the WebOTP API line
	// "@domain #code" as the message's last line, so browsers can offer
	// the code to the page at that domain (for example "example.com").
	WebOTPDomain string `json:"web_otp_domain,omitempty"`
	// AppHash, for SMS steps, appends the Android SMS Retriever app hash
	// (11 characters) as the message's last line, so the app can read the
	// code without the SMS permission.
	AppHash string `json:"app_hash,omitempty"`
}

// DuplicatePolicy is what Send does when the recipient already has an open
// verification on the flow.
type DuplicatePolicy string

const (
	// DuplicateReuse returns the open verification and resends its code
	// (subject to the resend cooldown and limits), as Twilio does.
	DuplicateReuse DuplicatePolicy = "reuse"
	// DuplicateReplace cancels the open verifications and starts a new one.
	DuplicateReplace DuplicatePolicy = "replace"
	// DuplicateAllow starts a new verification beside the open ones.
	DuplicateAllow DuplicatePolicy = "allow"
)

// Charset is the alphabet of generated codes.
type Charset int

const (
	// Numeric codes use the digits 0-9.
	Numeric Charset = iota
	// Alphanumeric codes use upper-case letters and digits without the
	// easily confused 0, O, 1 and I. They are checked case-insensitively.
	Alphanumeric
)

// String returns "numeric" or "alphanumeric".
func (c Charset) String() string {
	switch c {
	case Numeric:
		return "numeric"
	case Alphanumeric:
		return "alphanumeric"
	}
	return fmt.Sprintf("Charset(%d)", int(c))
}

// TemplateStatus is a template's review state.
type TemplateStatus string

// Template statuses. Only approved templates may be used by a flow.
const (
	TemplatePending  TemplateStatus = "pending"
	TemplateApproved TemplateStatus = "approved"
	TemplateRejected TemplateStatus = "rejected"
)

// Template is a message text for one channel. Its Body must contain the
// {code} placeholder (or its alias {token}); it may also use {minutes} (the
// code's validity in whole minutes) and {brand} (alias {app}, the flow's
// Brand).
type Template struct {
	// ID is assigned by CreateTemplate.
	ID string `json:"id"`
	// Name is mandatory.
	Name string `json:"name"`
	// Channel is the name of the channel the template is for; mandatory.
	Channel string `json:"channel"`
	// Body is the text with placeholders.
	Body string `json:"body"`
	// Language is a BCP 47 tag such as "en" or "pt-BR". Defaults to "en".
	Language string `json:"language"`
	// Status starts as pending; see ApproveTemplate and RejectTemplate.
	Status TemplateStatus `json:"status"`
	// Reason is the rejection reason.
	Reason string `json:"reason,omitempty"`
	// CreatedAt is set by CreateTemplate.
	CreatedAt time.Time `json:"created_at"`
}

const (
	defaultCodeLength  = 6
	defaultTTL         = 5 * time.Minute
	defaultMaxAttempts = 5
	maxTTL             = 24 * time.Hour
	maxMaxAttempts     = 100
	maxSteps           = 10
)

var placeholderRE = regexp.MustCompile(`\{[^{}]*\}`)

var placeholders = map[string]bool{"{code}": true, "{token}": true, "{minutes}": true, "{brand}": true, "{app}": true}

// CreateTemplate validates and stores a new template with status pending,
// and returns it with its ID. A template must be approved before a flow can
// use it.
func (e *Engine) CreateTemplate(ctx context.Context, t Template) (Template, error) {
	if err := e.validateTemplate(&t); err != nil {
		return Template{}, err
	}
	t.ID = uuid.NewString()
	t.Status = TemplatePending
	t.Reason = ""
	t.CreatedAt = e.now()
	defer e.templates.invalidate() // a new language of a name changes which one is picked
	if err := e.store.CreateTemplate(ctx, t); err != nil {
		return Template{}, storeErr(ctx, "create template", err)
	}
	return t, nil
}

func (e *Engine) validateTemplate(t *Template) error {
	t.Name = strings.TrimSpace(t.Name)
	if t.Name == "" {
		return invalid(ErrMissingField, "name", "name field is mandatory")
	}
	if t.Channel == "" {
		return invalid(ErrMissingField, "channel", "channel field is mandatory")
	}
	if _, ok := e.channels[t.Channel]; !ok {
		return invalid(ErrUnknownChannel, "channel", "channel %q is not registered (register it with verify.WithChannels)", t.Channel)
	}
	if strings.TrimSpace(t.Body) == "" {
		return invalid(ErrMissingField, "body", "body field is mandatory")
	}
	if err := checkText(t.Body, ErrInvalidTemplate, "body"); err != nil {
		return err
	}
	if t.Language == "" {
		t.Language = "en"
	}
	if !languageRE.MatchString(t.Language) {
		return invalid(ErrInvalidTemplate, "language", "language %q is not a language tag such as \"en\" or \"pt-BR\"", t.Language)
	}
	return nil
}

// checkText checks a message text (a Template's Body or a Step's Text):
// it must carry the code, and name no placeholder but the known ones.
func checkText(text string, kind *Error, parameter string) error {
	if !strings.Contains(text, "{code}") && !strings.Contains(text, "{token}") {
		return invalid(kind, parameter, "%s must contain the {code} placeholder", parameter)
	}
	for _, p := range placeholderRE.FindAllString(text, -1) {
		if !placeholders[p] {
			return invalid(kind, parameter, "unknown placeholder %s (use {code}, {token}, {minutes}, {brand} or {app})", p)
		}
	}
	return nil
}

var languageRE = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$`)

// ApproveTemplate marks a template approved, so flows may use it.
func (e *Engine) ApproveTemplate(ctx context.Context, id string) error {
	return e.setTemplateStatus(ctx, id, TemplateApproved, "")
}

// RejectTemplate marks a template rejected with a reason. Flows that use it
// can no longer deliver with it: their step fails and the next step is
// tried.
func (e *Engine) RejectTemplate(ctx context.Context, id, reason string) error {
	return e.setTemplateStatus(ctx, id, TemplateRejected, reason)
}

func (e *Engine) setTemplateStatus(ctx context.Context, id string, s TemplateStatus, reason string) error {
	if id == "" {
		return invalid(ErrMissingField, "template_id", "template_id field is mandatory")
	}
	defer e.templates.invalidate()
	err := e.store.SetTemplateStatus(ctx, id, s, reason)
	if errors.Is(err, ErrNotFound) {
		return ErrNotFound.with("template_id", "")
	}
	return storeErr(ctx, "set template status", err)
}

// Template returns a template by ID (E909 if unknown).
func (e *Engine) Template(ctx context.Context, id string) (Template, error) {
	if id == "" {
		return Template{}, invalid(ErrMissingField, "template_id", "template_id field is mandatory")
	}
	t, err := e.store.GetTemplate(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return Template{}, ErrNotFound.with("template_id", "")
	}
	return t, storeErr(ctx, "get template", err)
}

// Templates returns every template, oldest first.
func (e *Engine) Templates(ctx context.Context) ([]Template, error) {
	ts, err := e.store.ListTemplates(ctx)
	return ts, storeErr(ctx, "list templates", err)
}

// CreateFlow validates a flow, fills in its defaults, assigns its ID and
// stores it. If f.Default is set it becomes the default flow.
func (e *Engine) CreateFlow(ctx context.Context, f Flow) (Flow, error) {
	if err := e.validateFlow(ctx, &f, false); err != nil {
		return Flow{}, err
	}
	f.ID = uuid.NewString()
	f.CreatedAt = e.now()
	defer e.flows.invalidate() // a new default replaces the cached one
	if err := e.store.CreateFlow(ctx, f); err != nil {
		return Flow{}, storeErr(ctx, "create flow", err)
	}
	return f, nil
}

// UpdateFlow validates and replaces an existing flow (E909 if unknown).
// Verifications already started keep the steps they started with.
func (e *Engine) UpdateFlow(ctx context.Context, f Flow) (Flow, error) {
	if f.ID == "" {
		return Flow{}, invalid(ErrMissingField, "flow_id", "flow_id field is mandatory")
	}
	old, err := e.Flow(ctx, f.ID)
	if err != nil {
		return Flow{}, err
	}
	if err := e.validateFlow(ctx, &f, false); err != nil {
		return Flow{}, err
	}
	f.CreatedAt = old.CreatedAt
	defer e.flows.invalidate()
	if err := e.store.UpdateFlow(ctx, f); err != nil {
		if errors.Is(err, ErrNotFound) {
			return Flow{}, ErrNotFound.with("flow_id", "")
		}
		return Flow{}, storeErr(ctx, "update flow", err)
	}
	return f, nil
}

// DeleteFlow removes a flow (E909 if unknown). Verifications already started
// from it go on with the steps they started with.
func (e *Engine) DeleteFlow(ctx context.Context, id string) error {
	if id == "" {
		return invalid(ErrMissingField, "flow_id", "flow_id field is mandatory")
	}
	defer e.flows.invalidate()
	err := e.store.DeleteFlow(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return ErrNotFound.with("flow_id", "")
	}
	return storeErr(ctx, "delete flow", err)
}

// Flow returns a flow by ID (E909 if unknown).
func (e *Engine) Flow(ctx context.Context, id string) (Flow, error) {
	if id == "" {
		return Flow{}, invalid(ErrMissingField, "flow_id", "flow_id field is mandatory")
	}
	f, err := e.store.GetFlow(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return Flow{}, ErrNotFound.with("flow_id", "")
	}
	return f, storeErr(ctx, "get flow", err)
}

// Flows returns every flow, oldest first.
func (e *Engine) Flows(ctx context.Context) ([]Flow, error) {
	fs, err := e.store.ListFlows(ctx)
	return fs, storeErr(ctx, "list flows", err)
}

// validateFlow checks f and fills in its defaults. An ad-hoc flow (a
// Send's own, SendRequest.Flow) may give its steps their own Text.
func (e *Engine) validateFlow(ctx context.Context, f *Flow, adHoc bool) error {
	f.Name = strings.TrimSpace(f.Name)
	if f.Name == "" {
		return invalid(ErrMissingField, "name", "name field is mandatory")
	}
	if f.CodeLength == 0 {
		f.CodeLength = defaultCodeLength
	}
	if f.CodeLength < minCodeLength || f.CodeLength > maxCodeLength {
		return invalid(ErrInvalidFlow, "code_length", "code_length must be %d to %d, got %d", minCodeLength, maxCodeLength, f.CodeLength)
	}
	if f.Charset != Numeric && f.Charset != Alphanumeric {
		return invalid(ErrInvalidFlow, "charset", "charset must be Numeric or Alphanumeric, got %d", int(f.Charset))
	}
	if f.TTL == 0 {
		f.TTL = defaultTTL
	}
	if f.TTL < time.Second || f.TTL > maxTTL {
		return invalid(ErrInvalidFlow, "ttl", "ttl must be 1s to %s, got %s", maxTTL, f.TTL)
	}
	if f.MaxAttempts == 0 {
		f.MaxAttempts = defaultMaxAttempts
	}
	if f.MaxAttempts < 1 || f.MaxAttempts > maxMaxAttempts {
		return invalid(ErrInvalidFlow, "max_attempts", "max_attempts must be 1 to %d, got %d", maxMaxAttempts, f.MaxAttempts)
	}
	if f.Language == "" {
		f.Language = "en"
	}
	if !languageRE.MatchString(f.Language) {
		return invalid(ErrInvalidFlow, "language", "language %q is not a language tag such as \"en\" or \"pt-BR\"", f.Language)
	}
	if err := e.validateFlowPolicy(f); err != nil {
		return err
	}
	if len(f.Steps) == 0 {
		return invalid(ErrInvalidFlow, "steps", "a flow needs at least one step")
	}
	if len(f.Steps) > maxSteps {
		return invalid(ErrInvalidFlow, "steps", "a flow has at most %d steps, got %d", maxSteps, len(f.Steps))
	}
	f.Steps = append([]Step(nil), f.Steps...)
	var elapsed time.Duration
	for i, s := range f.Steps {
		p := fmt.Sprintf("steps[%d]", i)
		if s.After < 0 {
			return invalid(ErrInvalidFlow, p+".after", "after must not be negative, got %s", s.After)
		}
		if i == 0 && s.After != 0 {
			return invalid(ErrInvalidFlow, p+".after", "the first step is sent at once; its after must be 0")
		}
		elapsed += s.After
		if elapsed >= f.TTL {
			return invalid(ErrInvalidFlow, p+".after", "the step would be due %s after the start, when the code (ttl %s) has expired", elapsed, f.TTL)
		}
		if s.Channel == "" {
			return invalid(ErrMissingField, p+".channel", "channel field is mandatory")
		}
		ch, ok := e.channels[s.Channel]
		if !ok {
			return invalid(ErrUnknownChannel, p+".channel", "channel %q is not registered (register it with verify.WithChannels)", s.Channel)
		}
		if err := checkAutofill(s, p, addressingOf(ch)); err != nil {
			return err
		}
		if s.Language != "" && !languageRE.MatchString(s.Language) {
			return invalid(ErrInvalidFlow, p+".language", "language %q is not a language tag such as \"en\" or \"pt-BR\"", s.Language)
		}
		if s.Text != "" {
			if err := checkStepText(s, p, adHoc); err != nil {
				return err
			}
		}
		if sv, ok := ch.(StepValidator); ok {
			if err := sv.ValidateStep(s); err != nil {
				return invalid(ErrInvalidFlow, p, "channel %q: %s", s.Channel, err.Error())
			}
		}
		if s.Template != "" {
			t, err := e.store.GetTemplate(ctx, s.Template)
			if errors.Is(err, ErrNotFound) {
				return ErrNotFound.with(p+".template", "")
			}
			if err != nil {
				return storeErr(ctx, "get template", err)
			}
			if t.Status != TemplateApproved {
				return invalid(ErrTemplateNotApproved, p+".template", "template %s is %s, not approved", t.ID, t.Status)
			}
			if t.Channel != s.Channel {
				return invalid(ErrInvalidFlow, p+".template", "template %s is for channel %q, the step uses %q", t.ID, t.Channel, s.Channel)
			}
		}
	}
	return nil
}

// maxStepText is the longest Step.Text, in characters: ten SMS segments.
const maxStepText = 1600

// checkStepText checks a step's own Text: only an ad-hoc flow's step may
// have one, instead of a Template, and it must be a usable message text.
func checkStepText(s Step, p string, adHoc bool) error {
	switch {
	case !adHoc:
		return invalid(ErrInvalidFlow, p+".text", "a catalog flow's steps use approved templates; text is for a Send's ad-hoc flow (SendRequest.Flow)")
	case s.Template != "":
		return invalid(ErrInvalidFlow, p+".text", "text and template are exclusive; set one")
	case strings.TrimSpace(s.Text) == "":
		return invalid(ErrInvalidFlow, p+".text", "text must not be blank")
	case utf8.RuneCountInString(s.Text) > maxStepText:
		return invalid(ErrInvalidFlow, p+".text", "text must be at most %d characters, got %d", maxStepText, utf8.RuneCountInString(s.Text))
	case !utf8.ValidString(s.Text) || strings.IndexByte(s.Text, 0) >= 0:
		return invalid(ErrInvalidFlow, p+".text", "text must be UTF-8 text without NUL characters")
	}
	return checkText(s.Text, ErrInvalidFlow, p+".text")
}

var (
	domainRE  = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
	appHashRE = regexp.MustCompile(`^[A-Za-z0-9+/]{11}$`)
)

// checkAutofill validates a step's WebOTPDomain and AppHash.
func checkAutofill(s Step, p string, a Addressing) error {
	if s.WebOTPDomain == "" && s.AppHash == "" {
		return nil
	}
	if a != ByPhone {
		return invalid(ErrInvalidFlow, p, "web_otp_domain and app_hash are for SMS steps; channel %q delivers by email", s.Channel)
	}
	if s.WebOTPDomain != "" && s.AppHash != "" {
		return invalid(ErrInvalidFlow, p+".app_hash", "web_otp_domain and app_hash both need the message's last line; set one per step")
	}
	if s.WebOTPDomain != "" && !domainRE.MatchString(s.WebOTPDomain) {
		return invalid(ErrInvalidFlow, p+".web_otp_domain", "web_otp_domain must be a lower-case host name such as example.com, got %q", s.WebOTPDomain)
	}
	if s.AppHash != "" && !appHashRE.MatchString(s.AppHash) {
		return invalid(ErrInvalidFlow, p+".app_hash", "app_hash must be the 11-character hash Android's AppSignatureHelper prints, got %q", s.AppHash)
	}
	return nil
}

// validateFlowPolicy checks the flow's protection settings and normalises
// them.
func (e *Engine) validateFlowPolicy(f *Flow) error {
	switch f.Duplicates {
	case "":
		f.Duplicates = DuplicateReuse
	case DuplicateReuse, DuplicateReplace, DuplicateAllow:
	default:
		return invalid(ErrInvalidFlow, "duplicates", "duplicates must be reuse, replace or allow, got %q", f.Duplicates)
	}
	f.AllowedIPs = append([]string(nil), f.AllowedIPs...)
	for i, s := range f.AllowedIPs {
		p, err := parseIPRule(s)
		if err != nil {
			return invalid(ErrInvalidFlow, fmt.Sprintf("allowed_ips[%d]", i), "%q is not an IP address or CIDR prefix such as 203.0.113.0/24", s)
		}
		f.AllowedIPs[i] = p.String()
	}
	geo := len(f.AllowedCountries) > 0 || len(f.DeniedCountries) > 0 || len(f.DeniedNumberTypes) > 0
	if geo {
		if _, basic := e.phones.(shapeParser); basic {
			return invalid(ErrInvalidFlow, "allowed_countries", "country and number-type rules need a PhoneParser that knows them: verify.WithPhoneParser(phone.Parser{})")
		}
	}
	for _, list := range []struct {
		name string
		l    *[]string
	}{{"allowed_countries", &f.AllowedCountries}, {"denied_countries", &f.DeniedCountries}} {
		*list.l = append([]string(nil), *list.l...)
		for i, c := range *list.l {
			c = strings.ToUpper(strings.TrimSpace(c))
			if len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
				return invalid(ErrInvalidFlow, fmt.Sprintf("%s[%d]", list.name, i), "%q is not an ISO 3166-1 alpha-2 country code such as NO", c)
			}
			(*list.l)[i] = c
		}
	}
	for i, t := range f.DeniedNumberTypes {
		if !knownNumberTypes[t] {
			return invalid(ErrInvalidFlow, fmt.Sprintf("denied_number_types[%d]", i), "unknown number type %q", t)
		}
	}
	return nil
}

var knownNumberTypes = map[NumberType]bool{
	NumberUnknown: true, NumberMobile: true, NumberFixedLine: true, NumberFixedLineOrMobile: true,
	NumberTollFree: true, NumberPremiumRate: true, NumberSharedCost: true, NumberVoIP: true,
	NumberPersonal: true, NumberPager: true, NumberUAN: true, NumberVoicemail: true,
}

// parseIPRule parses an address or a CIDR prefix into a prefix.
func parseIPRule(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ipAllowed reports whether ip is in one of the rules; an empty list allows
// every client, a non-empty one refuses clients that give no IP.
func ipAllowed(rules []string, ip string) bool {
	if len(rules) == 0 {
		return true
	}
	a, err := netip.ParseAddr(strings.TrimSpace(ip))
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, r := range rules {
		if p, err := netip.ParsePrefix(r); err == nil && p.Contains(a) {
			return true
		}
	}
	return false
}
