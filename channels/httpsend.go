package channels

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
)

// maxResponseBytes bounds how much of a provider's response is read.
const maxResponseBytes = 64 << 10

// httpSender makes a provider's HTTP requests with a per-request timeout
// and the channel's retry policy. It is shared by the HTTP providers.
type httpSender struct {
	provider string
	client   *http.Client
	timeout  time.Duration
	retry    RetryPolicy
}

func newHTTPSender(provider string, client *http.Client, timeout time.Duration, retry RetryPolicy) httpSender {
	if client == nil {
		client = http.DefaultClient
	}
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	return httpSender{provider: provider, client: client, timeout: timeout, retry: retry.withDefaults()}
}

// httpRequest is one request, rebuilt for every attempt.
type httpRequest struct {
	method string
	url    string
	header http.Header
	body   []byte
	// basicUser and basicPass, when basicUser is set, are sent with HTTP
	// Basic authentication.
	basicUser, basicPass string
}

// responseFunc inspects a provider's answer: nil means success; otherwise
// it returns a *ProviderError saying whether the failure is permanent.
type responseFunc func(status int, header http.Header, body []byte) error

// do sends req until handle accepts the answer, the failure is permanent,
// the retry policy gives up or ctx is done.
func (s httpSender) do(ctx context.Context, req httpRequest, handle responseFunc) error {
	return s.retry.run(ctx, func(ctx context.Context, _ int) error {
		actx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		hr, err := http.NewRequestWithContext(actx, req.method, req.url, bytes.NewReader(req.body))
		if err != nil {
			return &ProviderError{Provider: s.provider, Message: "invalid request: " + err.Error(), Permanent: true}
		}
		for k, v := range req.header {
			hr.Header[k] = append([]string(nil), v...)
		}
		if req.basicUser != "" {
			hr.SetBasicAuth(req.basicUser, req.basicPass)
		}
		resp, err := s.client.Do(hr)
		if err != nil {
			return s.transportError(ctx, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		if err != nil {
			return s.transportError(ctx, err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes)) // let the connection be reused
		return handle(resp.StatusCode, resp.Header, body)
	})
}

// transportError wraps a network failure: transient, unless the caller's
// context is done, in which case the context's error is kept.
func (s httpSender) transportError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = errors.Join(cerr, err)
	}
	return &ProviderError{Provider: s.provider, Err: err}
}

// statusError classifies a non-2xx HTTP answer: 408, 425, 429 and 5xx are
// transient (with Retry-After honoured), every other status is permanent.
func statusError(provider string, status int, header http.Header, code, message string) *ProviderError {
	pe := &ProviderError{
		Provider:   provider,
		StatusCode: status,
		Code:       code,
		Message:    message,
		Permanent:  !retryableStatus(status),
	}
	if message == "" {
		pe.Message = http.StatusText(status)
	}
	if !pe.Permanent {
		pe.RetryAfter = parseRetryAfter(header.Get("Retry-After"), time.Now())
	}
	return pe
}

func retryableStatus(status int) bool {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests:
		return true
	case status >= 500:
		return status != http.StatusNotImplemented && status != http.StatusHTTPVersionNotSupported
	}
	return false
}

// parseRetryAfter reads a Retry-After header: a number of seconds or an
// HTTP date. It returns 0 when the header is absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

func is2xx(status int) bool { return status >= 200 && status < 300 }
