package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
)

// providers is the provider configuration found in the environment.
type providers struct {
	twilio  *twilioEnv
	smtp    *channels.SMTPConfig
	vonage  *channels.VonageConfig
	kaleyra *channels.KaleyraConfig
}

type twilioEnv struct {
	accountSID, authToken, apiKeySID, apiKeySecret  string
	from, messagingService, voiceFrom, whatsappFrom string
	callbackURL                                     string
}

func (p providers) any() bool {
	return p.twilio != nil || p.smtp != nil || p.vonage != nil || p.kaleyra != nil
}

// providersFromEnv reads the providers' credentials. A provider is
// configured when its first variable is set; its other required variables
// must then be set too.
func providersFromEnv(getenv func(string) string) (providers, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	var p providers
	if sid := env("TWILIO_ACCOUNT_SID"); sid != "" {
		t := &twilioEnv{
			accountSID: sid, authToken: env("TWILIO_AUTH_TOKEN"),
			apiKeySID: env("TWILIO_API_KEY_SID"), apiKeySecret: env("TWILIO_API_KEY_SECRET"),
			from: env("TWILIO_FROM"), messagingService: env("TWILIO_MESSAGING_SERVICE_SID"),
			voiceFrom: env("TWILIO_VOICE_FROM"), whatsappFrom: env("TWILIO_WHATSAPP_FROM"),
			callbackURL: env("TWILIO_STATUS_CALLBACK_URL"),
		}
		if t.from == "" && t.messagingService == "" {
			return p, fmt.Errorf("TWILIO_ACCOUNT_SID is set: set TWILIO_FROM (a Twilio number or sender ID) or TWILIO_MESSAGING_SERVICE_SID too")
		}
		if t.callbackURL != "" && t.authToken == "" {
			return p, fmt.Errorf("TWILIO_STATUS_CALLBACK_URL needs TWILIO_AUTH_TOKEN, which authenticates Twilio's callbacks")
		}
		p.twilio = t
	}
	if host := env("SMTP_HOST"); host != "" {
		c := &channels.SMTPConfig{
			Host: host, Username: env("SMTP_USERNAME"), Password: env("SMTP_PASSWORD"),
			From: env("SMTP_FROM"), Subject: env("SMTP_SUBJECT"),
		}
		if port := env("SMTP_PORT"); port != "" {
			n, err := strconv.Atoi(port)
			if err != nil || n <= 0 || n > 65535 {
				return p, fmt.Errorf("SMTP_PORT %q is not a port number", port)
			}
			c.Port = n
		}
		switch sec := strings.ToLower(env("SMTP_SECURITY")); sec {
		case "", "starttls":
			c.Security = channels.SMTPStartTLS
		case "tls", "implicit":
			c.Security = channels.SMTPImplicitTLS
		case "opportunistic":
			c.Security = channels.SMTPOpportunisticTLS
		case "plain", "none":
			c.Security = channels.SMTPPlain
		default:
			return p, fmt.Errorf("SMTP_SECURITY %q: use starttls (default), tls, opportunistic or plain", sec)
		}
		if c.From == "" {
			return p, fmt.Errorf("SMTP_HOST is set: set SMTP_FROM too, such as \"Acme <no-reply@acme.example>\"")
		}
		p.smtp = c
	}
	if key := env("VONAGE_API_KEY"); key != "" {
		p.vonage = &channels.VonageConfig{APIKey: key, APISecret: env("VONAGE_API_SECRET"), From: env("VONAGE_FROM")}
	}
	if sid := env("KALEYRA_SID"); sid != "" {
		p.kaleyra = &channels.KaleyraConfig{SID: sid, APIKey: env("KALEYRA_API_KEY"), From: env("KALEYRA_FROM"),
			BaseURL: env("KALEYRA_BASE_URL"), TemplateID: env("KALEYRA_TEMPLATE_ID"),
			CallbackURL: env("KALEYRA_CALLBACK_URL")}
		if secret := env("KALEYRA_CALLBACK_SECRET"); secret != "" {
			p.kaleyra.CallbackSecret = []byte(secret)
		}
	}
	return p, nil
}

// namedChannel is a channel and a word for who delivers it.
type namedChannel struct {
	ch       verify.Channel
	provider string
}

func channelList(cs []namedChannel) []verify.Channel {
	out := make([]verify.Channel, len(cs))
	for i, c := range cs {
		out[i] = c.ch
	}
	return out
}

// consoleNames are the channels a Console stands in for when no provider
// delivers them: enough for every reference example.
var consoleNames = []string{"sms", "voice", "whatsapp", "viber", "email"}

// buildChannels makes the configured providers' channels and, if console
// is set, Console channels writing to w for the names no provider covers.
// SMS goes through the first of Twilio, Vonage and Kaleyra that is
// configured.
func buildChannels(p providers, console bool, w io.Writer) ([]namedChannel, error) {
	var out []namedChannel
	have := map[string]bool{}
	add := func(ch verify.Channel, provider string, err error) error {
		if err != nil {
			return err
		}
		if !have[ch.Name()] {
			have[ch.Name()] = true
			out = append(out, namedChannel{ch, provider})
		}
		return nil
	}
	if t := p.twilio; t != nil {
		base := channels.TwilioConfig{
			AccountSID: t.accountSID, AuthToken: t.authToken,
			APIKeySID: t.apiKeySID, APIKeySecret: t.apiKeySecret,
			StatusCallbackURL: t.callbackURL,
		}
		sms := base
		sms.Kind, sms.From, sms.MessagingServiceSID = channels.TwilioSMS, t.from, t.messagingService
		ch, err := channels.NewTwilio(sms)
		if err := add(ch, "twilio", err); err != nil {
			return nil, err
		}
		if t.voiceFrom != "" {
			voice := base
			voice.Kind, voice.From = channels.TwilioVoice, t.voiceFrom
			ch, err := channels.NewTwilio(voice)
			if err := add(ch, "twilio", err); err != nil {
				return nil, err
			}
		}
		if t.whatsappFrom != "" {
			wa := base
			wa.Kind, wa.From = channels.TwilioWhatsApp, t.whatsappFrom
			ch, err := channels.NewTwilio(wa)
			if err := add(ch, "twilio", err); err != nil {
				return nil, err
			}
		}
	}
	if p.vonage != nil && !have["sms"] {
		ch, err := channels.NewVonage(*p.vonage)
		if err := add(ch, "vonage", err); err != nil {
			return nil, err
		}
	}
	if p.kaleyra != nil && !have["sms"] {
		ch, err := channels.NewKaleyra(*p.kaleyra)
		if err := add(ch, "kaleyra", err); err != nil {
			return nil, err
		}
	}
	if p.smtp != nil {
		ch, err := channels.NewSMTP(*p.smtp)
		if err := add(ch, "smtp", err); err != nil {
			return nil, err
		}
	}
	if console {
		for _, name := range consoleNames {
			if err := add(channels.NewConsole(name, w), "console", nil); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
