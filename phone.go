package verify

import (
	"errors"
	"net"
	"net/mail"
	"strings"
)

// NumberType is the kind of line a phone number belongs to, as a
// PhoneParser reports it.
type NumberType string

// Number types. Flows can refuse some (Flow.DeniedNumberTypes); premium-rate
// and shared-cost numbers are the usual targets of SMS-pumping fraud.
const (
	NumberUnknown           NumberType = "unknown"
	NumberMobile            NumberType = "mobile"
	NumberFixedLine         NumberType = "fixed_line"
	NumberFixedLineOrMobile NumberType = "fixed_line_or_mobile"
	NumberTollFree          NumberType = "toll_free"
	NumberPremiumRate       NumberType = "premium_rate"
	NumberSharedCost        NumberType = "shared_cost"
	NumberVoIP              NumberType = "voip"
	NumberPersonal          NumberType = "personal"
	NumberPager             NumberType = "pager"
	NumberUAN               NumberType = "uan"
	NumberVoicemail         NumberType = "voicemail"
)

// PhoneInfo is what a PhoneParser knows about a number.
type PhoneInfo struct {
	// E164 is the number in E.164 form, "+4712345678".
	E164 string
	// Country is the ISO 3166-1 alpha-2 region code, "NO"; "" if unknown.
	Country string
	// Type is the line type; NumberUnknown if unknown.
	Type NumberType
}

// PhoneParser turns what a user typed into an E.164 number and tells its
// country and line type. The default checks the E.164 shape only and knows
// no countries; package phone (github.com/openverify/verify/phone) parses
// with libphonenumber's metadata, which geo permissions and number-type
// rules need:
//
//	verify.WithPhoneParser(phone.Parser{})
type PhoneParser interface {
	ParsePhone(raw string) (PhoneInfo, error)
}

// WithPhoneParser sets the PhoneParser. Defaults to an E.164 shape check.
func WithPhoneParser(p PhoneParser) Option {
	return func(c *config) error {
		if p == nil {
			return errors.New("verify: WithPhoneParser(nil): pass phone.Parser{} or your own PhoneParser")
		}
		c.phones = p
		return nil
	}
}

// shapeParser accepts "+" and 8 to 15 digits.
type shapeParser struct{}

func (shapeParser) ParsePhone(raw string) (PhoneInfo, error) {
	if !isE164(raw) {
		return PhoneInfo{}, errors.New("mobile must be in E.164 format, such as +4712345678")
	}
	return PhoneInfo{E164: raw, Type: NumberUnknown}, nil
}

// isE164 reports whether s is "+" followed by 8 to 15 digits, the first not 0.
func isE164(s string) bool {
	if len(s) < 9 || len(s) > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9' {
		return false
	}
	for i := 2; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkEmail accepts a bare address (no display name, no angle brackets)
// whose domain is a plausible public host name: dot-separated labels of
// letters, digits and hyphens, ending in an alphabetic top-level domain.
func checkEmail(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return errors.New("email must be a bare address, such as ana@example.com")
	}
	at := strings.LastIndexByte(s, '@')
	domain := strings.ToLower(s[at+1:])
	if net.ParseIP(strings.Trim(domain, "[]")) != nil {
		return errors.New("email domain must be a host name, not an IP address")
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 || len(domain) > 253 {
		return errors.New("email domain must be a full host name, such as example.com")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("email domain has an empty or malformed label")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return errors.New("email domain may hold only letters, digits, hyphens and dots")
			}
		}
	}
	tld := labels[len(labels)-1]
	for i := 0; i < len(tld); i++ {
		if tld[i] < 'a' || tld[i] > 'z' {
			if !strings.HasPrefix(tld, "xn--") {
				return errors.New("email domain must end in a top-level domain such as .com")
			}
			break
		}
	}
	if len(tld) < 2 {
		return errors.New("email domain must end in a top-level domain such as .com")
	}
	return nil
}
