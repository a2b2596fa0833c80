package channels

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/openverify/verify"
)

// Console is a Channel for demos and local development: it writes each
// message, code included, to a writer instead of delivering it. Do not use
// it in production, where the writer is a log that must not hold codes.
type Console struct {
	name       string
	addressing verify.Addressing
	mu         sync.Mutex
	w          io.Writer
}

var (
	_ verify.Channel   = (*Console)(nil)
	_ verify.Addresser = (*Console)(nil)
)

// NewConsole returns a Console channel with the given name that writes to
// w. As with NewRecorder, a name containing "mail" makes it a
// verify.ByEmail channel.
func NewConsole(name string, w io.Writer) *Console {
	return &Console{name: name, addressing: addressingByName(name), w: w}
}

// Name implements verify.Channel.
func (c *Console) Name() string { return c.name }

// Addressing implements verify.Addresser.
func (c *Console) Addressing() verify.Addressing { return c.addressing }

// Send implements verify.Channel by writing one line:
//
//	[sms] from Acme to +4712345678: Your verification code is 123456. ...
func (c *Console) Send(ctx context.Context, m verify.Message) (verify.Receipt, error) {
	if err := ctx.Err(); err != nil {
		return verify.Receipt{}, err
	}
	to := m.To.Phone
	if c.addressing == verify.ByEmail {
		to = m.To.Email
	}
	from := ""
	if m.From != "" {
		from = " from " + m.From
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := fmt.Fprintf(c.w, "[%s]%s to %s: %s\n", c.name, from, to, m.Body); err != nil {
		return verify.Receipt{}, fmt.Errorf("channels: console: %w", err)
	}
	return verify.Receipt{ProviderID: m.ID}, nil
}
