package httpapi

import (
	"context"
	"errors"
	"time"

	"github.com/openverify/verify"
)

// Names of the flows SetupCatalog creates.
const (
	DefaultFlowName  = "default"
	FallbackFlowName = "sms-then-email"
)

// defaultTemplates are the message texts SetupCatalog creates (and
// approves) for the channels that are registered.
var defaultTemplates = map[string]string{
	"sms":   "{brand}: your verification code is {code}. It expires in {minutes} minutes.",
	"email": "Your {brand} verification code is {code}. It expires in {minutes} minutes. If you did not ask for it, ignore this email.",
}

// SetupCatalog creates, on first start, an approved template for the sms
// and email channels (when the engine has them), the default flow (one SMS
// step, or one step on the engine's first channel by name), and a flow that falls
// back from SMS to email after a minute. It finds what an earlier start
// created by name, so it can run at every start; flows an admin has
// changed are left as they are. The WAYSCloud and ThunderSMS APIs need no
// flows: they run ad-hoc ones.
func SetupCatalog(ctx context.Context, eng *verify.Engine, brand string) error {
	chans := eng.Channels()
	if len(chans) == 0 {
		return errors.New("httpapi: the engine has no channels (verify.WithChannels)")
	}
	names := make(map[string]bool, len(chans))
	for _, c := range chans {
		names[c] = true
	}

	templates, err := eng.Templates(ctx)
	if err != nil {
		return err
	}
	tpl := map[string]string{} // channel → approved template ID
	for ch, body := range defaultTemplates {
		if !names[ch] {
			continue
		}
		name := ch + "-default"
		var found *verify.Template
		for i := range templates {
			if templates[i].Name == name && templates[i].Channel == ch {
				found = &templates[i]
				break
			}
		}
		if found == nil {
			t, err := eng.CreateTemplate(ctx, verify.Template{Name: name, Channel: ch, Body: body, Language: "en"})
			if err != nil {
				return err
			}
			if err := eng.ApproveTemplate(ctx, t.ID); err != nil {
				return err
			}
			t.Status = verify.TemplateApproved
			found = &t
		}
		if found.Status == verify.TemplateApproved {
			tpl[ch] = found.ID
		}
	}

	flows, err := eng.Flows(ctx)
	if err != nil {
		return err
	}
	byName := map[string]verify.Flow{}
	hasDefault := false
	for _, f := range flows {
		if _, dup := byName[f.Name]; !dup {
			byName[f.Name] = f
		}
		hasDefault = hasDefault || f.Default
	}
	ensure := func(f verify.Flow) (verify.Flow, error) {
		if old, ok := byName[f.Name]; ok {
			return old, nil
		}
		f.Brand = brand
		f, err := eng.CreateFlow(ctx, f)
		if err == nil {
			byName[f.Name] = f
		}
		return f, err
	}
	step := func(ch string) verify.Step { return verify.Step{Channel: ch, Template: tpl[ch]} }

	first := chans[0]
	if names["sms"] {
		first = "sms"
	}
	if _, err := ensure(verify.Flow{
		Name: DefaultFlowName, Description: "One " + first + " step; used when a request names no flow.",
		Default: !hasDefault, Steps: []verify.Step{step(first)},
	}); err != nil {
		return err
	}
	if names["sms"] && names["email"] {
		email := step("email")
		email.After = time.Minute
		if _, err := ensure(verify.Flow{
			Name: FallbackFlowName, Description: "SMS, then the same code by email after a minute if it is not verified.",
			Steps: []verify.Step{step("sms"), email},
		}); err != nil {
			return err
		}
	}
	return nil
}
