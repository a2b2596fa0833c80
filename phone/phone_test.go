package phone_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/phone"
)

func TestParsePhone(t *testing.T) {
	cases := []struct {
		raw, region string
		want        verify.PhoneInfo
	}{
		{"+47 412 34 567", "", verify.PhoneInfo{E164: "+4741234567", Country: "NO", Type: verify.NumberMobile}},
		{"0047 41234567", "", verify.PhoneInfo{}}, // 00 prefix needs a region to be known
		{"412 34 567", "NO", verify.PhoneInfo{E164: "+4741234567", Country: "NO", Type: verify.NumberMobile}},
		{"+44 7400 123456", "", verify.PhoneInfo{E164: "+447400123456", Country: "GB", Type: verify.NumberMobile}},
		{"+44 909 876 5432", "", verify.PhoneInfo{E164: "+449098765432", Country: "GB", Type: verify.NumberPremiumRate}},
		{"+1 (201) 555-0123", "", verify.PhoneInfo{E164: "+12015550123", Country: "US", Type: verify.NumberFixedLineOrMobile}},
		{"+91 98765 43210", "", verify.PhoneInfo{E164: "+919876543210", Country: "IN", Type: verify.NumberMobile}},
	}
	for _, c := range cases {
		t.Run(c.raw, func(t *testing.T) {
			got, err := phone.Parser{DefaultRegion: c.region}.ParsePhone(c.raw)
			if c.want.E164 == "" {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
		})
	}
}

func TestParsePhoneRejects(t *testing.T) {
	for _, raw := range []string{"", "hello", "+47 1234", "+999 123456789", "+47 12345678901234", "12345678"} {
		_, err := phone.Parser{}.ParsePhone(raw)
		assert.Error(t, err, raw)
		if raw != "" {
			assert.True(t, errors.Is(err, phone.ErrInvalid), raw)
		}
	}
}
