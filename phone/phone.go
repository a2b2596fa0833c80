// Package phone parses phone numbers with libphonenumber's metadata
// (github.com/nyaruka/phonenumbers), for the engine's recipient checks, geo
// permissions and number-type rules:
//
//	eng, err := verify.New(store, verify.WithPhoneParser(phone.Parser{DefaultRegion: "NO"}))
//
// It lives outside package verify so that programs that do not need it do
// not carry the metadata.
package phone

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nyaruka/phonenumbers"

	"github.com/openverify/verify"
)

// Parser is a verify.PhoneParser. The zero value accepts numbers in
// international form only ("+47 123 45 678", "0047 12345678"); set
// DefaultRegion to also accept national numbers of that region.
type Parser struct {
	// DefaultRegion is an ISO 3166-1 alpha-2 code ("NO") for numbers
	// written without a country code; "" requires one.
	DefaultRegion string
}

var _ verify.PhoneParser = Parser{}

// ErrInvalid is wrapped by every error ParsePhone returns.
var ErrInvalid = errors.New("not a valid phone number")

// ParsePhone implements verify.PhoneParser: it accepts the usual spacing
// and punctuation, rejects numbers that are impossible or unassigned in
// their country's numbering plan, and returns the E.164 form, the region and
// the line type.
func (p Parser) ParsePhone(raw string) (verify.PhoneInfo, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return verify.PhoneInfo{}, errors.New("mobile is empty")
	}
	region := strings.ToUpper(p.DefaultRegion)
	if region == "" {
		region = "ZZ" // unknown region: only international numbers parse
	}
	n, err := phonenumbers.Parse(raw, region)
	if err != nil {
		return verify.PhoneInfo{}, fmt.Errorf("%w: mobile must be in international format, such as +4712345678", ErrInvalid)
	}
	if !phonenumbers.IsValidNumber(n) {
		return verify.PhoneInfo{}, fmt.Errorf("%w: mobile is not a valid number in its country's numbering plan", ErrInvalid)
	}
	return verify.PhoneInfo{
		E164:    phonenumbers.Format(n, phonenumbers.E164),
		Country: phonenumbers.GetRegionCodeForNumber(n),
		Type:    numberTypes[phonenumbers.GetNumberType(n)],
	}, nil
}

var numberTypes = map[phonenumbers.PhoneNumberType]verify.NumberType{
	phonenumbers.FIXED_LINE:           verify.NumberFixedLine,
	phonenumbers.MOBILE:               verify.NumberMobile,
	phonenumbers.FIXED_LINE_OR_MOBILE: verify.NumberFixedLineOrMobile,
	phonenumbers.TOLL_FREE:            verify.NumberTollFree,
	phonenumbers.PREMIUM_RATE:         verify.NumberPremiumRate,
	phonenumbers.SHARED_COST:          verify.NumberSharedCost,
	phonenumbers.VOIP:                 verify.NumberVoIP,
	phonenumbers.PERSONAL_NUMBER:      verify.NumberPersonal,
	phonenumbers.PAGER:                verify.NumberPager,
	phonenumbers.UAN:                  verify.NumberUAN,
	phonenumbers.VOICEMAIL:            verify.NumberVoicemail,
	phonenumbers.UNKNOWN:              verify.NumberUnknown,
}
