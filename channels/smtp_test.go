package channels_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"net"
	netmail "net/mail"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
)

// mailServer is a real SMTP server (github.com/emersion/go-smtp) on
// 127.0.0.1 that records what it receives.
type mailServer struct {
	port     int
	certPool *x509.CertPool

	user, pass string   // when user is set, MAIL requires a login
	mechs      []string // AUTH mechanisms offered

	mu           sync.Mutex
	conns        map[*smtp.Conn]bool // connections seen (STARTTLS starts a new session on the same one)
	authAttempts int
	rcpts        int
	rcptReplies  []*smtp.SMTPError // scripted RCPT answers, nil = accept
	messages     []receivedMail
}

type receivedMail struct {
	from string
	to   []string
	data []byte
	tls  bool
}

type serverMode int

const (
	serverPlain    serverMode = iota // no TLS at all
	serverStartTLS                   // offers STARTTLS
	serverImplicit                   // TLS from the first byte
)

func startMailServer(t *testing.T, mode serverMode, configure func(*mailServer)) *mailServer {
	t.Helper()
	ms := &mailServer{mechs: []string{sasl.Plain, sasl.Login}, conns: map[*smtp.Conn]bool{}}
	if configure != nil {
		configure(ms)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		ms.mu.Lock()
		ms.conns[c] = true
		ms.mu.Unlock()
		return &mailSession{srv: ms, conn: c}, nil
	}))
	srv.Domain = "localhost"
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if os.Getenv("SMTP_DEBUG") != "" {
		srv.Debug = os.Stderr
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	switch mode {
	case serverPlain:
		srv.AllowInsecureAuth = true
	case serverStartTLS, serverImplicit:
		cert, pool := selfSignedCert(t)
		ms.certPool = pool
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if mode == serverImplicit {
			l = tls.NewListener(l, cfg)
		} else {
			srv.TLSConfig = cfg
		}
	}
	ms.port = l.Addr().(*net.TCPAddr).Port
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ms
}

func (ms *mailServer) received() []receivedMail {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return append([]receivedMail(nil), ms.messages...)
}

// stats returns how many connections were made and how many logins tried.
func (ms *mailServer) stats() (connections, authAttempts int) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return len(ms.conns), ms.authAttempts
}

type mailSession struct {
	srv    *mailServer
	conn   *smtp.Conn
	authed bool
	from   string
	to     []string
}

func (s *mailSession) AuthMechanisms() []string { return s.srv.mechs }

func (s *mailSession) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			return s.login(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{check: s.login}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *mailSession) login(user, pass string) error {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	s.srv.authAttempts++
	if s.srv.user != "" && user == s.srv.user && pass == s.srv.pass {
		s.authed = true
		return nil
	}
	return smtp.ErrAuthFailed
}

func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.srv.user != "" && !s.authed {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.srv.mu.Lock()
	n := s.srv.rcpts
	s.srv.rcpts++
	var reject *smtp.SMTPError
	if n < len(s.srv.rcptReplies) {
		reject = s.srv.rcptReplies[n]
	}
	s.srv.mu.Unlock()
	if reject != nil {
		return reject
	}
	s.to = append(s.to, to)
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.srv.mu.Lock()
	s.srv.messages = append(s.srv.messages, receivedMail{from: s.from, to: s.to, data: data, tls: isTLS})
	s.srv.mu.Unlock()
	return nil
}

func (s *mailSession) Reset()        { s.from, s.to = "", nil }
func (s *mailSession) Logout() error { return nil }

// loginServer is the server side of the LOGIN mechanism.
type loginServer struct {
	check func(user, pass string) error
	step  int
	user  string
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if len(response) == 0 {
			return []byte("Username:"), false, nil
		}
		l.user = string(response)
		l.step++
		return []byte("Password:"), false, nil
	case 1:
		l.user = string(response)
		l.step++
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(response))
	}
}

// selfSignedCert makes a certificate for 127.0.0.1 and a pool trusting it.
func selfSignedCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// parsedMail is a received message taken apart.
type parsedMail struct {
	header netmail.Header
	parts  map[string]string // media type → decoded content
}

func parseMail(t *testing.T, data []byte) parsedMail {
	t.Helper()
	msg, err := netmail.ReadMessage(bytes.NewReader(data))
	require.NoError(t, err)
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, "multipart/alternative", mediaType)
	pm := parsedMail{header: msg.Header, parts: map[string]string{}}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart() // decodes quoted-printable
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		ct, ctParams, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		require.NoError(t, err)
		assert.Equal(t, "utf-8", strings.ToLower(ctParams["charset"]))
		content, err := io.ReadAll(part)
		require.NoError(t, err)
		pm.parts[ct] = string(content)
	}
	return pm
}

func newSMTP(t *testing.T, ms *mailServer, cfg channels.SMTPConfig) *channels.SMTP {
	t.Helper()
	cfg.Host = "127.0.0.1"
	cfg.Port = ms.port
	if ms.certPool != nil && cfg.TLSConfig == nil {
		cfg.TLSConfig = &tls.Config{RootCAs: ms.certPool, MinVersion: tls.VersionTLS12}
	}
	if cfg.From == "" {
		cfg.From = "Acme <no-reply@acme.example>"
	}
	ch, err := channels.NewSMTP(cfg)
	require.NoError(t, err)
	return ch
}

func TestSMTPStartTLSWithAuth(t *testing.T) {
	ms := startMailServer(t, serverStartTLS, func(ms *mailServer) { ms.user, ms.pass = "mailer", "s3cret" })
	ch := newSMTP(t, ms, channels.SMTPConfig{
		Username: "mailer",
		Password: "s3cret",
		Subjects: map[string]string{"de": "Ihr Bestätigungscode"},
	})
	assert.Equal(t, "email", ch.Name())
	assert.Equal(t, verify.ByEmail, ch.Addressing())

	m := testMessage()
	m.Language = "de"
	m.Body = "Ihr Bestätigungscode lautet 483920. Er läuft in 5 Minuten ab."
	receipt, err := ch.Send(context.Background(), m)
	require.NoError(t, err)
	assert.Equal(t, verify.DeliverySent, receipt.Status)
	assert.Equal(t, "<"+m.ID+"@acme.example>", receipt.ProviderID)

	got := ms.received()
	require.Len(t, got, 1)
	assert.True(t, got[0].tls, "the message travelled over TLS")
	assert.Equal(t, "no-reply@acme.example", got[0].from)
	assert.Equal(t, []string{"ana@example.com"}, got[0].to)

	pm := parseMail(t, got[0].data)
	from, err := netmail.ParseAddress(pm.header.Get("From"))
	require.NoError(t, err)
	assert.Equal(t, "Acme", from.Name)
	assert.Equal(t, "no-reply@acme.example", from.Address)
	to, err := netmail.ParseAddress(pm.header.Get("To"))
	require.NoError(t, err)
	assert.Equal(t, "ana@example.com", to.Address)
	subject, err := new(mime.WordDecoder).DecodeHeader(pm.header.Get("Subject"))
	require.NoError(t, err)
	assert.Equal(t, "Ihr Bestätigungscode", subject)
	assert.NotEqual(t, subject, pm.header.Get("Subject"), "a non-ASCII subject is MIME-encoded")
	assert.Equal(t, "<"+m.ID+"@acme.example>", pm.header.Get("Message-ID"))
	assert.Equal(t, "de", pm.header.Get("Content-Language"))
	assert.Equal(t, "auto-generated", pm.header.Get("Auto-Submitted"))
	assert.Equal(t, "1.0", pm.header.Get("MIME-Version"))
	_, err = pm.header.Date()
	assert.NoError(t, err)

	assert.Equal(t, m.Body, strings.TrimSpace(pm.parts["text/plain"]))
	html := pm.parts["text/html"]
	assert.Contains(t, html, `lang="de"`)
	assert.Contains(t, html, ">483920</strong>")
	assert.Contains(t, html, "Ihr Bestätigungscode lautet")

	_, attempts := ms.stats()
	assert.Equal(t, 1, attempts)
}

func TestSMTPImplicitTLSWithLogin(t *testing.T) {
	ms := startMailServer(t, serverImplicit, func(ms *mailServer) {
		ms.user, ms.pass = "mailer", "s3cret"
		ms.mechs = []string{sasl.Login}
	})
	ch := newSMTP(t, ms, channels.SMTPConfig{
		Security: channels.SMTPImplicitTLS,
		Username: "mailer",
		Password: "s3cret",
	})
	_, err := ch.Send(context.Background(), testMessage())
	require.NoError(t, err)
	got := ms.received()
	require.Len(t, got, 1)
	assert.True(t, got[0].tls)
	pm := parseMail(t, got[0].data)
	assert.Contains(t, pm.parts["text/plain"], testCode)
	subject, _ := new(mime.WordDecoder).DecodeHeader(pm.header.Get("Subject"))
	assert.Equal(t, "Your verification code", subject)
}

func TestSMTPExplicitLoginMechanism(t *testing.T) {
	ms := startMailServer(t, serverStartTLS, func(ms *mailServer) { ms.user, ms.pass = "mailer", "s3cret" })
	ch := newSMTP(t, ms, channels.SMTPConfig{Username: "mailer", Password: "s3cret", Auth: channels.SMTPAuthLogin})
	_, err := ch.Send(context.Background(), testMessage())
	require.NoError(t, err)
	assert.Len(t, ms.received(), 1)
}

func TestSMTPPlainForTestsAndStepSender(t *testing.T) {
	ms := startMailServer(t, serverPlain, nil)
	ch := newSMTP(t, ms, channels.SMTPConfig{Security: channels.SMTPPlain, TextOnly: true, Subject: "Login code"})
	m := testMessage()
	m.From = "Support <support@acme.example>"
	_, err := ch.Send(context.Background(), m)
	require.NoError(t, err)
	got := ms.received()
	require.Len(t, got, 1)
	assert.False(t, got[0].tls)
	assert.Equal(t, "support@acme.example", got[0].from, "the step's From wins")
	msg, err := netmail.ReadMessage(bytes.NewReader(got[0].data))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(msg.Header.Get("Content-Type"), "text/plain"), "text only")
	assert.Equal(t, "<"+m.ID+"@acme.example>", msg.Header.Get("Message-ID"))
}

func TestSMTPOpportunisticTLSFallsBackToPlain(t *testing.T) {
	ms := startMailServer(t, serverPlain, nil)
	ch := newSMTP(t, ms, channels.SMTPConfig{Security: channels.SMTPOpportunisticTLS})
	_, err := ch.Send(context.Background(), testMessage())
	require.NoError(t, err)
	assert.Len(t, ms.received(), 1)
}

func TestSMTPStartTLSRequired(t *testing.T) {
	ms := startMailServer(t, serverPlain, nil)
	retry, rec := fastRetry(3)
	ch := newSMTP(t, ms, channels.SMTPConfig{Retry: retry}) // SMTPStartTLS by default
	_, err := ch.Send(context.Background(), testMessage())
	assertNoSecrets(t, err)
	assert.True(t, verify.IsPermanent(err), "%v", err)
	assert.Empty(t, rec.Waits())
	assert.Empty(t, ms.received())
}

func TestSMTPUntrustedCertificateIsPermanent(t *testing.T) {
	ms := startMailServer(t, serverImplicit, nil)
	retry, rec := fastRetry(3)
	ch := newSMTP(t, ms, channels.SMTPConfig{
		Security:  channels.SMTPImplicitTLS,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}, // system roots only
		Retry:     retry,
	})
	_, err := ch.Send(context.Background(), testMessage())
	assert.True(t, verify.IsPermanent(err), "%v", err)
	assert.Empty(t, rec.Waits())
}

func TestSMTPWrongPasswordIsPermanent(t *testing.T) {
	ms := startMailServer(t, serverStartTLS, func(ms *mailServer) { ms.user, ms.pass = "mailer", "s3cret" })
	retry, rec := fastRetry(3)
	ch := newSMTP(t, ms, channels.SMTPConfig{Username: "mailer", Password: "wrong", Retry: retry})
	_, err := ch.Send(context.Background(), testMessage())
	assertNoSecrets(t, err)
	assert.True(t, verify.IsPermanent(err))
	assert.Empty(t, rec.Waits())
	sessions, attempts := ms.stats()
	assert.Equal(t, 1, sessions)
	assert.Equal(t, 1, attempts)
	pe := providerError(t, err)
	assert.Equal(t, 535, pe.StatusCode)
	assert.Equal(t, "5.7.8", pe.Code)
	assert.NotContains(t, err.Error(), "wrong", "the password is not in the error")
}

func TestSMTPRejectedRecipientIsPermanent(t *testing.T) {
	ms := startMailServer(t, serverPlain, func(ms *mailServer) {
		ms.rcptReplies = []*smtp.SMTPError{{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}}
	})
	retry, rec := fastRetry(3)
	ch := newSMTP(t, ms, channels.SMTPConfig{Security: channels.SMTPPlain, Retry: retry})
	_, err := ch.Send(context.Background(), testMessage())
	assertNoSecrets(t, err)
	assert.True(t, verify.IsPermanent(err))
	assert.Empty(t, rec.Waits())
	sessions, _ := ms.stats()
	assert.Equal(t, 1, sessions)
	pe := providerError(t, err)
	assert.Equal(t, "smtp", pe.Provider)
	assert.Equal(t, 550, pe.StatusCode)
	assert.Equal(t, "5.1.1", pe.Code)
	assert.Contains(t, pe.Message, "No such user")
}

func TestSMTPTemporaryFailureIsRetried(t *testing.T) {
	busy := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
	ms := startMailServer(t, serverPlain, func(ms *mailServer) { ms.rcptReplies = []*smtp.SMTPError{busy, busy} })
	retry, rec := fastRetry(3)
	ch := newSMTP(t, ms, channels.SMTPConfig{Security: channels.SMTPPlain, Retry: retry})
	_, err := ch.Send(context.Background(), testMessage())
	require.NoError(t, err)
	sessions, _ := ms.stats()
	assert.Equal(t, 3, sessions)
	assert.Len(t, rec.Waits(), 2)
	assert.Len(t, ms.received(), 1)
}

func TestSMTPTemporaryFailureUntilGivingUp(t *testing.T) {
	busy := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
	ms := startMailServer(t, serverPlain, func(ms *mailServer) { ms.rcptReplies = []*smtp.SMTPError{busy, busy} })
	retry, _ := fastRetry(2)
	ch := newSMTP(t, ms, channels.SMTPConfig{Security: channels.SMTPPlain, Retry: retry})
	_, err := ch.Send(context.Background(), testMessage())
	assertNoSecrets(t, err)
	assert.False(t, verify.IsPermanent(err))
	pe := providerError(t, err)
	assert.Equal(t, 451, pe.StatusCode)
	assert.Equal(t, 2, pe.Attempts)
}

func TestSMTPUnreachableServerIsTransient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	retry, rec := fastRetry(2)
	ch, err := channels.NewSMTP(channels.SMTPConfig{Host: "127.0.0.1", Port: port, Security: channels.SMTPPlain, From: "no-reply@acme.example", Retry: retry})
	require.NoError(t, err)
	_, err = ch.Send(context.Background(), testMessage())
	assertNoSecrets(t, err)
	assert.False(t, verify.IsPermanent(err))
	assert.Len(t, rec.Waits(), 1)
}

func TestSMTPRefusesMessagesItCannotSend(t *testing.T) {
	ms := startMailServer(t, serverPlain, nil)
	ch := newSMTP(t, ms, channels.SMTPConfig{Security: channels.SMTPPlain})
	m := testMessage()
	m.To.Email = ""
	_, err := ch.Send(context.Background(), m)
	assert.True(t, verify.IsPermanent(err))
	m = testMessage()
	m.From = "not an address"
	_, err = ch.Send(context.Background(), m)
	assert.True(t, verify.IsPermanent(err))
	sessions, _ := ms.stats()
	assert.Equal(t, 0, sessions)
}

func TestSMTPConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg  channels.SMTPConfig
		want string
	}{
		{channels.SMTPConfig{}, "Host"},
		{channels.SMTPConfig{Host: "mail.example", From: "nobody"}, "From"},
		{channels.SMTPConfig{Host: "mail.example", Password: "x"}, "Username"},
		{channels.SMTPConfig{Host: "mail.example", Port: 70000}, "Port"},
		{channels.SMTPConfig{Host: "mail.example", Security: 9}, "Security"},
	} {
		_, err := channels.NewSMTP(tc.cfg)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
		assert.Contains(t, err.Error(), "channels: smtp: ")
	}
}
