package httpapi

import (
	"crypto/sha256"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/openverify/verify"
)

// An Option configures the handlers. Every constructor (New, Kaleyra,
// WAYSCloud, ThunderSMS, Admin, Hooks) takes the same options and uses the
// ones that concern it.
type Option func(*settings)

// An Authorizer decides whether a request may use a handler, in place of
// the handler's key check (WithAuthorizer, WithAdminAuthorizer). A nil
// error lets the request through. A *verify.Error is answered as it is,
// with the status its HTTPStatus suggests (E924, 401, for example); any
// other error is logged and answered 401 with E924 and a generic message,
// so that its text never reaches the client.
type Authorizer func(r *http.Request) error

// InlinePolicy governs what a request may put into its ad-hoc flow's
// messages: ThunderSMS's payload.template (the message text) and
// channels[].from (the sender ID). Its zero value, the default, allows
// neither: a request's own text is refused with E917, a sender ID with
// E809, and the channel's own sender and the built-in (or a catalog
// template's) text are used when a request names none.
type InlinePolicy struct {
	// Text allows a request's own message text. It must contain the code
	// placeholder ({token} or {code}) and be at most MaxText characters.
	Text bool
	// MaxText is the longest text, in characters: 1 to 1,600 (ten SMS
	// segments). 0 means 320 (two).
	MaxText int
	// Senders are the sender IDs a request may name, compared exactly;
	// "*" allows any. Empty refuses every sender ID.
	Senders []string
}

// defaultMaxText is InlinePolicy's MaxText when it is 0.
const defaultMaxText = 320

// settings is what the options set.
type settings struct {
	sid          string
	apiKeys      [][sha256.Size]byte
	adminKeys    [][sha256.Size]byte
	apiAuth      Authorizer
	adminAuth    Authorizer
	actor        func(*http.Request) string
	trustProxy   bool
	sessionLife  time.Duration
	signInRate   verify.Rate
	maxBody      int64
	logger       *slog.Logger
	channelFlows map[string]string
	flowChannels map[string]string // channelFlows' flows to their channels
	adHoc        verify.Flow
	inline       InlinePolicy
	twilio       *TwilioHook
	kaleyra      *KaleyraHook
}

func newSettings(opts []Option) settings {
	st := settings{maxBody: defaultMaxBody, logger: slog.Default(), sessionLife: defaultSessionLife, signInRate: defaultSignInRate}
	for _, o := range opts {
		o(&st)
	}
	st.flowChannels = make(map[string]string, len(st.channelFlows))
	for ch, id := range st.channelFlows {
		if old, ok := st.flowChannels[id]; !ok || ch < old {
			st.flowChannels[id] = ch
		}
	}
	return st
}

// WithAPIKeys sets the keys the verify APIs accept, each in its vendor's
// scheme: Kaleyra's api-key header, WAYSCloud's X-API-Key, ThunderSMS's
// "Authorization: Bearer". Keys are compared in constant time. Without
// keys or an Authorizer, every request to these APIs is refused (401).
func WithAPIKeys(keys ...string) Option {
	return func(st *settings) { st.apiKeys = hashKeys(keys) }
}

// WithAuthorizer decides who may use the verify APIs instead of their
// keys: a host that authenticates requests its own way (a session, mTLS,
// a gateway in front) passes an Authorizer, which sees each request before
// its body is read. With it, WithAPIKeys is not consulted.
func WithAuthorizer(a Authorizer) Option {
	return func(st *settings) { st.apiAuth = a }
}

// WithAdminKeys sets the keys the admin API accepts, in the X-Admin-Key
// header or as the password of HTTP basic auth (any user name), and the
// console signs operators in with, compared in constant time. Without keys or an admin Authorizer, every
// admin request is refused (401).
func WithAdminKeys(keys ...string) Option {
	return func(st *settings) { st.adminKeys = hashKeys(keys) }
}

// WithAdminAuthorizer decides who may use the admin API and dashboard
// instead of the admin keys. The cross-origin check still comes first.
func WithAdminAuthorizer(a Authorizer) Option {
	return func(st *settings) { st.adminAuth = a }
}

// WithActor names, for the audit log, who made an admin request that the
// admin Authorizer (WithAdminAuthorizer) admitted: the console's operator
// and the admin API's caller. Without it they are "admin". (Requests
// admitted by an admin key are named by the key's fingerprint, and the
// console's sessions by the name given at sign-in.)
func WithActor(f func(*http.Request) string) Option {
	return func(st *settings) { st.actor = f }
}

// WithSID sets the account SID of Kaleyra's paths, /v1/{sid}/verify: a
// request naming another SID is refused (401, E809 sid). Empty (the
// default) accepts any SID.
func WithSID(sid string) Option {
	return func(st *settings) { st.sid = sid }
}

// WithTrustProxy takes the client IP from the last X-Forwarded-For entry
// (the one a reverse proxy in front appended) instead of the connection's
// address, and takes X-Forwarded-Proto https as HTTPS, so that the
// console's cookies are marked Secure. Use it only behind a proxy that
// sets the headers.
func WithTrustProxy() Option {
	return func(st *settings) { st.trustProxy = true }
}

// defaultSessionLife is how long a console sign-in lasts by default.
const defaultSessionLife = 12 * time.Hour

// defaultSignInRate is how many console sign-ins a client IP may try by
// default.
var defaultSignInRate = verify.Rate{Limit: 10, Per: 15 * time.Minute}

// WithSignInRate limits the console sign-ins one client IP may try, right
// or wrong, counted by the engine's Limiter (verify.Engine.Allow); the
// default is 10 per 15 minutes. A Rate with a negative Limit turns the
// limit off.
func WithSignInRate(r verify.Rate) Option {
	return func(st *settings) { st.signInRate = r }
}

// WithSessionLifetime sets how long a console sign-in lasts, from the
// sign-in (by the engine's clock); the default is 12 hours. d <= 0 keeps
// it.
func WithSessionLifetime(d time.Duration) Option {
	return func(st *settings) {
		if d > 0 {
			st.sessionLife = d
		}
	}
}

// WithMaxBody limits request bodies to n bytes (413 beyond). The default
// is 16 KiB; n <= 0 keeps it.
func WithMaxBody(n int64) Option {
	return func(st *settings) {
		if n > 0 {
			st.maxBody = n
		}
	}
}

// WithLogger sets the logger for the request log and internal errors.
// Defaults to slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(st *settings) {
		if l != nil {
			st.logger = l
		}
	}
}

// WithChannelFlows sends WAYSCloud requests for a channel through a
// catalog flow, so an admin can manage its settings and templates:
// channel name → flow ID. A channel without one runs as an ad-hoc flow (see
// WAYSCloud). A check's answer names a verification's channel by its
// flow; for a flow that several channels share, the first by name.
func WithChannelFlows(m map[string]string) Option {
	return func(st *settings) { st.channelFlows = maps.Clone(m) }
}

// WithAdHocFlow sets what the ad-hoc flows of the WAYSCloud and ThunderSMS
// APIs start from: Brand, MaxAttempts, Language, Duplicates, the IP
// allow-list and the country rules, and for WAYSCloud also CodeLength,
// Charset and TTL. Its ID, Name, Default and Steps are ignored: steps come
// from the request, and the identity is the wire format's (see WAYSCloud
// and ThunderSMS).
func WithAdHocFlow(f verify.Flow) Option {
	return func(st *settings) {
		f.ID, f.Name, f.Default, f.Steps = "", "", false, nil
		f.AllowedIPs = slices.Clone(f.AllowedIPs)
		f.AllowedCountries = slices.Clone(f.AllowedCountries)
		f.DeniedCountries = slices.Clone(f.DeniedCountries)
		f.DeniedNumberTypes = slices.Clone(f.DeniedNumberTypes)
		st.adHoc = f
	}
}

// WithInlinePolicy sets what a ThunderSMS request may put into its
// messages (see InlinePolicy); by default, neither its own text nor a
// sender ID.
func WithInlinePolicy(p InlinePolicy) Option {
	return func(st *settings) {
		p.Senders = slices.Clone(p.Senders)
		st.inline = p
	}
}

// WithTwilioHook serves Twilio's status callbacks at POST /hooks/twilio
// (see Hooks).
func WithTwilioHook(h TwilioHook) Option {
	return func(st *settings) { st.twilio = &h }
}

// WithKaleyraHook serves Kaleyra's delivery reports at GET and POST
// /hooks/kaleyra (see Hooks).
func WithKaleyraHook(h KaleyraHook) Option {
	return func(st *settings) { st.kaleyra = &h }
}
