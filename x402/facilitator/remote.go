package facilitator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lualambda/caddy-lualambda/x402"
)

// Defaults of RemoteConfig.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultSettleTimeout    = 90 * time.Second
	DefaultSupportedTTL     = 10 * time.Minute
	DefaultSupportedRetries = 3
)

// maxResponseSize bounds a facilitator's response body.
const maxResponseSize = 1 << 20

// RemoteConfig configures a Remote facilitator client.
type RemoteConfig struct {
	// URL is the facilitator's base URL; /verify, /settle and /supported
	// are appended.
	URL string
	// Client sends the requests; nil means a new http.Client.
	Client *http.Client
	// Timeout bounds /verify and /supported calls; 0 means DefaultTimeout.
	Timeout time.Duration
	// SettleTimeout bounds /settle calls, which wait for the chain; 0 means
	// DefaultSettleTimeout.
	SettleTimeout time.Duration
	// Header is added to every request (e.g. an API key).
	Header http.Header
	// SupportedTTL is how long a /supported answer is reused; 0 means
	// DefaultSupportedTTL.
	SupportedTTL time.Duration
	// SupportedRetries is how often /supported is retried after a 429; 0
	// means DefaultSupportedRetries, negative means never.
	SupportedRetries int
}

// Remote is a Facilitator reached over HTTP.
type Remote struct {
	base *url.URL
	cfg  RemoteConfig

	mu        sync.Mutex
	supported *x402.SupportedResponse
	fetched   time.Time
}

var _ Facilitator = (*Remote)(nil)

// NewRemote returns a client for the facilitator at cfg.URL.
func NewRemote(cfg RemoteConfig) (*Remote, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("facilitator: remote URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("facilitator: remote URL %q is not an http(s) URL", cfg.URL)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = DefaultSettleTimeout
	}
	if cfg.SupportedTTL <= 0 {
		cfg.SupportedTTL = DefaultSupportedTTL
	}
	if cfg.SupportedRetries == 0 {
		cfg.SupportedRetries = DefaultSupportedRetries
	}
	return &Remote{base: u, cfg: cfg}, nil
}

// Supported returns the facilitator's /supported answer, cached for
// SupportedTTL. A 429 is retried with exponential backoff (honouring
// Retry-After up to 10 s). When a refresh fails, a stale answer is returned
// if there is one.
func (r *Remote) Supported(ctx context.Context) (x402.SupportedResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.supported != nil && time.Since(r.fetched) < r.cfg.SupportedTTL {
		return *r.supported, nil
	}
	s, err := r.fetchSupported(ctx)
	if err != nil {
		if r.supported != nil {
			return *r.supported, nil
		}
		return x402.SupportedResponse{}, err
	}
	r.supported, r.fetched = &s, time.Now()
	return s, nil
}

// FeePayer returns the fee payer the facilitator offers for the version,
// scheme and network, or "".
func (r *Remote) FeePayer(ctx context.Context, version int, scheme, network string) (string, error) {
	s, err := r.Supported(ctx)
	if err != nil {
		return "", err
	}
	return FeePayer(s, version, scheme, network), nil
}

func (r *Remote) fetchSupported(ctx context.Context) (x402.SupportedResponse, error) {
	backoff := 250 * time.Millisecond
	for attempt := 0; ; attempt++ {
		var s x402.SupportedResponse
		status, retryAfter, err := r.call(ctx, http.MethodGet, "supported", nil, &s, r.cfg.Timeout)
		if status != http.StatusTooManyRequests || attempt >= max(r.cfg.SupportedRetries, 0) {
			if err != nil {
				return x402.SupportedResponse{}, err
			}
			return s, nil
		}
		wait := backoff
		if retryAfter > 0 {
			wait = min(retryAfter, 10*time.Second)
		}
		select {
		case <-ctx.Done():
			return x402.SupportedResponse{}, fmt.Errorf("facilitator: supported: %w", ctx.Err())
		case <-time.After(wait):
		}
		backoff *= 2
	}
}

// Verify implements Facilitator. A non-200 answer that carries an
// invalidReason is returned as a negative answer.
func (r *Remote) Verify(ctx context.Context, p x402.Payment, req x402.Requirement) (x402.VerifyResponse, error) {
	body, err := x402.NewFacilitatorRequest(p, req)
	if err != nil {
		return x402.VerifyResponse{}, err
	}
	var v x402.VerifyResponse
	status, _, err := r.call(ctx, http.MethodPost, "verify", body, &v, r.cfg.Timeout)
	if err != nil {
		if status != 0 && status != http.StatusOK && !v.IsValid && v.InvalidReason != "" {
			return v, nil
		}
		return x402.VerifyResponse{}, err
	}
	return v, nil
}

// Settle implements Facilitator. A non-200 answer that carries an
// errorReason is returned as a negative answer.
func (r *Remote) Settle(ctx context.Context, p x402.Payment, req x402.Requirement) (x402.SettleResponse, error) {
	body, err := x402.NewFacilitatorRequest(p, req)
	if err != nil {
		return x402.SettleResponse{}, err
	}
	var s x402.SettleResponse
	status, _, err := r.call(ctx, http.MethodPost, "settle", body, &s, r.cfg.SettleTimeout)
	if err != nil {
		if status != 0 && status != http.StatusOK && !s.Success && s.ErrorReason != "" {
			return s, nil
		}
		return x402.SettleResponse{}, err
	}
	return s, nil
}

// call sends one request and decodes the JSON answer into out, also for
// non-200 answers (the error then says so). It returns the status and any
// Retry-After delay.
func (r *Remote) call(ctx context.Context, method, endpoint string, in any, out any, timeout time.Duration) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := r.base.JoinPath(endpoint)
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return 0, 0, fmt.Errorf("facilitator: %s: encode: %w", endpoint, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return 0, 0, fmt.Errorf("facilitator: %s: %w", endpoint, err)
	}
	for k, vs := range r.cfg.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("facilitator: %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return resp.StatusCode, 0, fmt.Errorf("facilitator: %s: read answer: %w", endpoint, err)
	}
	if len(data) > maxResponseSize {
		return resp.StatusCode, 0, fmt.Errorf("facilitator: %s: answer larger than %d bytes", endpoint, maxResponseSize)
	}
	retryAfter := time.Duration(0)
	if secs, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && secs > 0 {
		retryAfter = time.Duration(secs) * time.Second
	}
	decodeErr := json.Unmarshal(data, out)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, retryAfter, fmt.Errorf("facilitator: %s: HTTP %d: %s", endpoint, resp.StatusCode, snippet(data))
	}
	if decodeErr != nil {
		return resp.StatusCode, 0, fmt.Errorf("facilitator: %s: decode answer: %w", endpoint, decodeErr)
	}
	return resp.StatusCode, 0, nil
}

func snippet(b []byte) string {
	const n = 200
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}
