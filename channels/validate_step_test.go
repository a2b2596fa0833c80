package channels_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
)

func TestValidateStepNeedsSender(t *testing.T) {
	v, err := channels.NewVonage(channels.VonageConfig{APIKey: "k", APISecret: "s"})
	require.NoError(t, err)
	k, err := channels.NewKaleyra(channels.KaleyraConfig{SID: "HXAP1", APIKey: "A1"})
	require.NoError(t, err)
	for _, sv := range []verify.StepValidator{v, k} {
		assert.Error(t, sv.ValidateStep(verify.Step{Channel: "sms"}))
		assert.NoError(t, sv.ValidateStep(verify.Step{Channel: "sms", From: "ACME"}))
	}
	withFrom, err := channels.NewVonage(channels.VonageConfig{APIKey: "k", APISecret: "s", From: "ACME"})
	require.NoError(t, err)
	assert.NoError(t, withFrom.ValidateStep(verify.Step{Channel: "sms"}), "the config's From serves every step")
}
