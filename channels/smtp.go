package channels

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"html/template"
	"io"
	"net"
	netmail "net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wneessen/go-mail"

	"github.com/openverify/verify"
)

// SMTPSecurity selects how an SMTP channel protects its connection.
type SMTPSecurity int

const (
	// SMTPStartTLS connects in plain text and upgrades with STARTTLS, and
	// fails if the server does not offer it. The zero value; port 587 by
	// default.
	SMTPStartTLS SMTPSecurity = iota
	// SMTPImplicitTLS speaks TLS from the first byte ("SMTPS"); port 465
	// by default.
	SMTPImplicitTLS
	// SMTPOpportunisticTLS upgrades with STARTTLS when the server offers
	// it and goes on in plain text otherwise; port 25 by default. Only
	// for relays on a trusted network.
	SMTPOpportunisticTLS
	// SMTPPlain never uses TLS; port 25 by default. For tests and local
	// relays only: PLAIN and LOGIN authentication then work only with a
	// server on localhost.
	SMTPPlain
)

// SMTPAuthMechanism selects the SASL mechanism used to log in.
type SMTPAuthMechanism int

const (
	// SMTPAuthAuto uses PLAIN if the server offers it, else LOGIN. The
	// zero value.
	SMTPAuthAuto SMTPAuthMechanism = iota
	// SMTPAuthPlain uses PLAIN (RFC 4616).
	SMTPAuthPlain
	// SMTPAuthLogin uses LOGIN, for servers that offer nothing else.
	SMTPAuthLogin
)

// SMTPConfig configures an SMTP email channel. Zero values mean the
// defaults given on each field.
type SMTPConfig struct {
	// Name is how flows refer to the channel. Defaults to "email".
	Name string
	// Host is the SMTP server's host name. Required.
	Host string
	// Port is the server's port. Defaults to 587 for SMTPStartTLS, 465 for
	// SMTPImplicitTLS and 25 otherwise.
	Port int
	// Security selects STARTTLS (the zero value, required), implicit TLS,
	// opportunistic STARTTLS or plain text.
	Security SMTPSecurity
	// TLSConfig configures TLS. Defaults to verifying the server's
	// certificate for Host with TLS 1.2 or later.
	TLSConfig *tls.Config

	// Username, when set, makes the channel log in with Auth. PLAIN and
	// LOGIN are only used over TLS (or with a server on localhost).
	Username string
	// Password is Username's password.
	Password string
	// Auth selects the mechanism. Defaults to SMTPAuthAuto.
	Auth SMTPAuthMechanism

	// From is the default From address, such as
	// "Acme <no-reply@acme.example>"; a flow step's From overrides it. One
	// of the two is required.
	From string
	// Subject is the subject line. Defaults to "Your verification code".
	Subject string
	// Subjects maps a message's Language to its subject line, overriding
	// Subject for that language.
	Subjects map[string]string
	// SubjectFunc, if set, computes the subject line and overrides Subject
	// and Subjects. It must not put the code in the subject unless that is
	// wanted: subjects show in notifications and lock screens.
	SubjectFunc func(m verify.Message) string
	// HTML is the template for the HTML part, executed with an
	// SMTPTemplateData. Defaults to a plain layout that shows the body with
	// the code in bold.
	HTML *template.Template
	// TextOnly sends only the text part, without an HTML alternative.
	TextOnly bool
	// HELO is the name sent in EHLO/HELO. Defaults to the local host name.
	HELO string

	// Timeout bounds connecting and each command's reply. Defaults to 15
	// seconds; the Send context's deadline, if sooner, wins.
	Timeout time.Duration
	// Retry is the retry policy for transient failures (network errors,
	// 4xx replies). The zero value is the default policy (see RetryPolicy).
	Retry RetryPolicy
}

// SMTPTemplateData is what SMTPConfig.HTML is executed with.
type SMTPTemplateData struct {
	// Subject is the message's subject line.
	Subject string
	// Body is the rendered text, code included.
	Body string
	// Code is the one-time code.
	Code string
	// BeforeCode is the part of Body before the first occurrence of Code.
	BeforeCode string
	// AfterCode is the part of Body after the first occurrence of Code.
	AfterCode string
	// HasCode reports whether Body contains Code.
	HasCode bool
	// Language is the message's language, such as "en".
	Language string
	// ExpiresAt is when the code stops working.
	ExpiresAt time.Time
}

var defaultSMTPHTML = template.Must(template.New("email").Parse(`<!DOCTYPE html>
<html{{with .Language}} lang="{{.}}"{{end}}>
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>{{.Subject}}</title></head>
<body style="margin:0;padding:24px;font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:16px;line-height:1.5;color:#222">
{{if .HasCode}}<p style="white-space:pre-line">{{.BeforeCode}}<strong style="font-size:1.4em;letter-spacing:0.15em">{{.Code}}</strong>{{.AfterCode}}</p>
{{else}}<p style="white-space:pre-line">{{.Body}}</p>
<p><strong style="font-size:1.4em;letter-spacing:0.15em">{{.Code}}</strong></p>
{{end}}</body>
</html>
`))

// SMTP is a verify.ByEmail channel that sends each code as a MIME email
// (text and HTML alternatives, UTF-8 subject) through an SMTP server. The
// Message-ID header is derived from the message's ID, so a resent message
// can be recognised as a duplicate. An SMTP is safe for concurrent use; it
// opens one connection per message.
type SMTP struct {
	cfg     SMTPConfig
	name    string
	port    int
	tls     *tls.Config
	timeout time.Duration
	retry   RetryPolicy
}

var (
	_ verify.Channel   = (*SMTP)(nil)
	_ verify.Addresser = (*SMTP)(nil)
)

const defaultSMTPTimeout = 15 * time.Second

// NewSMTP returns an SMTP channel, or an error naming the first missing or
// invalid field of cfg. It does not connect.
func NewSMTP(cfg SMTPConfig) (*SMTP, error) {
	const p = "smtp"
	if cfg.Host == "" {
		return nil, configError(p, "missing Host (the SMTP server's host name)")
	}
	if cfg.Security < SMTPStartTLS || cfg.Security > SMTPPlain {
		return nil, configError(p, "unknown Security %d", int(cfg.Security))
	}
	if cfg.Auth < SMTPAuthAuto || cfg.Auth > SMTPAuthLogin {
		return nil, configError(p, "unknown Auth %d", int(cfg.Auth))
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, configError(p, "Port %d is out of range", cfg.Port)
	}
	if cfg.Password != "" && cfg.Username == "" {
		return nil, configError(p, "Password is set but Username is not")
	}
	if cfg.From != "" {
		if _, err := netmail.ParseAddress(cfg.From); err != nil {
			return nil, configError(p, "From %q is not an email address: %v", cfg.From, err)
		}
	}
	s := &SMTP{cfg: cfg, name: cfg.Name, port: cfg.Port, timeout: cfg.Timeout, retry: cfg.Retry.withDefaults()}
	if s.name == "" {
		s.name = "email"
	}
	if s.port == 0 {
		switch cfg.Security {
		case SMTPStartTLS:
			s.port = 587
		case SMTPImplicitTLS:
			s.port = 465
		default:
			s.port = 25
		}
	}
	if s.timeout <= 0 {
		s.timeout = defaultSMTPTimeout
	}
	if cfg.TLSConfig != nil {
		s.tls = cfg.TLSConfig.Clone()
	} else {
		s.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if s.tls.ServerName == "" {
		s.tls.ServerName = cfg.Host
	}
	return s, nil
}

// Name returns the channel's name.
func (s *SMTP) Name() string { return s.name }

// Addressing returns verify.ByEmail: the channel sends to Recipient.Email.
func (s *SMTP) Addressing() verify.Addressing { return verify.ByEmail }

// Send builds the email for m and hands it to the server. The receipt's
// ProviderID is the server's queue ID when its reply names one ("queued
// as ..."), otherwise the Message-ID.
func (s *SMTP) Send(ctx context.Context, m verify.Message) (verify.Receipt, error) {
	msg, msgID, err := s.build(m)
	if err != nil {
		return verify.Receipt{}, err
	}
	err = s.retry.run(ctx, func(ctx context.Context, _ int) error {
		return s.attempt(ctx, msg, m)
	})
	if err != nil {
		return verify.Receipt{}, sendError(err)
	}
	id := queueID(msg.ServerResponse())
	if id == "" {
		id = msgID
	}
	return verify.Receipt{ProviderID: id, Status: verify.DeliverySent}, nil
}

// build makes the MIME message and returns it with its Message-ID.
func (s *SMTP) build(m verify.Message) (*mail.Msg, string, error) {
	const p = "smtp"
	if m.To.Email == "" {
		return nil, "", permanentf(p, "message %s has no recipient email address", m.ID)
	}
	fromText := m.From
	if fromText == "" {
		fromText = s.cfg.From
	}
	if fromText == "" {
		return nil, "", permanentf(p, "no sender: set SMTPConfig.From or the flow step's From")
	}
	from, err := netmail.ParseAddress(fromText)
	if err != nil {
		return nil, "", permanentf(p, "sender %q is not an email address", fromText)
	}
	msg := mail.NewMsg(mail.WithNoDefaultUserAgent())
	msg.FromMailAddress(from)
	if err := msg.To(m.To.Email); err != nil {
		return nil, "", permanentf(p, "recipient %q is not an email address", m.To.Email)
	}
	subject := s.subject(m)
	msg.Subject(subject)
	_, domain, _ := strings.Cut(from.Address, "@")
	msgID := m.ID + "@" + domain
	msg.SetMessageIDWithValue(msgID)
	msg.SetDate()
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	if m.Language != "" {
		msg.SetGenHeader(mail.HeaderContentLang, m.Language)
	}
	msg.SetBodyString(mail.TypeTextPlain, m.Body)
	if !s.cfg.TextOnly {
		html, err := s.html(m, subject)
		if err != nil {
			return nil, "", permanentf(p, "HTML template: %v", redactErr(err, m))
		}
		msg.AddAlternativeString(mail.TypeTextHTML, html)
	}
	return msg, "<" + msgID + ">", nil
}

func (s *SMTP) subject(m verify.Message) string {
	if s.cfg.SubjectFunc != nil {
		return s.cfg.SubjectFunc(m)
	}
	if v, ok := s.cfg.Subjects[m.Language]; ok && v != "" {
		return v
	}
	if s.cfg.Subject != "" {
		return s.cfg.Subject
	}
	return "Your verification code"
}

func (s *SMTP) html(m verify.Message, subject string) (string, error) {
	t := s.cfg.HTML
	if t == nil {
		t = defaultSMTPHTML
	}
	data := SMTPTemplateData{Subject: subject, Body: m.Body, Code: m.Code, Language: m.Language, ExpiresAt: m.ExpiresAt}
	if m.Code != "" {
		data.BeforeCode, data.AfterCode, data.HasCode = strings.Cut(m.Body, m.Code)
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// attempt makes one connection and sends msg.
func (s *SMTP) attempt(ctx context.Context, msg *mail.Msg, m verify.Message) error {
	timeout := s.timeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(deadline))
	}
	if timeout <= 0 {
		return &ProviderError{Provider: "smtp", Err: context.DeadlineExceeded}
	}
	var (
		mu    sync.Mutex
		stops []func() bool
	)
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, stop := range stops {
			stop()
		}
	}()
	implicit := s.cfg.Security == SMTPImplicitTLS
	dial := func(dctx context.Context, network, addr string) (net.Conn, error) {
		var (
			conn net.Conn
			err  error
		)
		d := &net.Dialer{}
		if implicit {
			conn, err = (&tls.Dialer{NetDialer: d, Config: s.tls}).DialContext(dctx, network, addr)
		} else {
			conn, err = d.DialContext(dctx, network, addr)
		}
		if err != nil {
			return nil, err
		}
		// go-mail bounds each command by its timeout; closing the
		// connection when ctx ends makes cancellation stop it at once.
		mu.Lock()
		stops = append(stops, context.AfterFunc(ctx, func() { conn.Close() }))
		mu.Unlock()
		return conn, nil
	}
	opts := []mail.Option{
		mail.WithPort(s.port),
		mail.WithTimeout(timeout),
		mail.WithDialContextFunc(dial),
	}
	if s.cfg.HELO != "" {
		opts = append(opts, mail.WithHELO(s.cfg.HELO))
	}
	switch s.cfg.Security {
	case SMTPStartTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory), mail.WithTLSConfig(s.tls))
	case SMTPOpportunisticTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSOpportunistic), mail.WithTLSConfig(s.tls))
	case SMTPImplicitTLS:
		opts = append(opts, mail.WithSSL(), mail.WithTLSPolicy(mail.NoTLS), mail.WithTLSConfig(s.tls))
	case SMTPPlain:
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	}
	if s.cfg.Username != "" {
		switch s.cfg.Auth {
		case SMTPAuthPlain:
			opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthPlain))
		case SMTPAuthLogin:
			opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthLogin))
		default:
			opts = append(opts, mail.WithOpportunisticSMTPAuth(mail.SMTPAuthPlain, mail.SMTPAuthLogin))
		}
		opts = append(opts, mail.WithUsername(s.cfg.Username), mail.WithPassword(s.cfg.Password))
	}
	client, err := mail.NewClient(s.cfg.Host, opts...)
	if err != nil {
		return &ProviderError{Provider: "smtp", Message: "configuring client: " + err.Error(), Permanent: true}
	}
	err = client.DialAndSendWithContext(ctx, msg)
	if msg.IsDelivered() {
		// The server took the message; a failure after that (QUIT) must
		// not make the engine send it again.
		return nil
	}
	if err == nil {
		err = errors.New("message not accepted")
	}
	return smtpError(ctx, err, m)
}

// smtpError classifies a failed attempt: 5xx replies, TLS certificate
// errors and configuration errors are permanent; 4xx replies, network
// errors and timeouts are transient.
func smtpError(ctx context.Context, err error, m verify.Message) *ProviderError {
	const p = "smtp"
	if cerr := ctx.Err(); cerr != nil {
		return &ProviderError{Provider: p, Err: errors.Join(cerr, err)}
	}
	var se *mail.SendError
	if errors.As(err, &se) {
		pe := &ProviderError{
			Provider:   p,
			StatusCode: se.ErrorCode(),
			Code:       se.EnhancedStatusCode(),
			Message:    redact(se.Error(), m),
		}
		switch code := se.ErrorCode(); {
		case code >= 500:
			pe.Permanent = true
		case code >= 400:
		default:
			switch se.Reason {
			case mail.ErrGetSender, mail.ErrGetRcpts, mail.ErrNoUnencoded:
				pe.Permanent = true
			}
		}
		return pe
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return &ProviderError{
			Provider:   p,
			StatusCode: te.Code,
			Code:       enhancedCode(te.Msg),
			Message:    redact(te.Msg, m),
			Permanent:  te.Code >= 500,
		}
	}
	var (
		certErr    *tls.CertificateVerificationError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
		recordErr  tls.RecordHeaderError
	)
	if errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) ||
		errors.As(err, &invalidErr) || errors.As(err, &recordErr) {
		return &ProviderError{Provider: p, Message: "TLS: " + err.Error(), Permanent: true, Err: err}
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return &ProviderError{Provider: p, Err: err}
	}
	// What is left are go-mail's own checks (no STARTTLS, no AUTH, ...),
	// which are configuration mistakes that retrying cannot fix.
	return &ProviderError{Provider: p, Message: redact(err.Error(), m), Permanent: true, Err: err}
}

// enhancedCode returns the RFC 3463 enhanced status code that starts an
// SMTP reply's text, such as "5.7.8", or "".
func enhancedCode(msg string) string {
	first, _, _ := strings.Cut(strings.TrimSpace(msg), " ")
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return ""
	}
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil {
			return ""
		}
	}
	return first
}

// queueID extracts the queue ID from a reply such as
// "2.0.0 Ok: queued as 4AbC12", or "".
func queueID(reply string) string {
	_, after, ok := strings.Cut(reply, "queued as ")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(strings.TrimSpace(after), " ")
	return strings.TrimRight(id, ".,;")
}

// redactErr returns err's text without the message's code or body.
func redactErr(err error, m verify.Message) string { return redact(err.Error(), m) }
