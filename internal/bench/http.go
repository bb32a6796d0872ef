package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/invokeapi"
)

// invoker runs Lua through a server's invocation API.
type invoker struct {
	// base is the API's URL, e.g. http://127.0.0.1:8080/invoke.
	base string
	hc   *http.Client
}

// newInvoker returns an invoker whose client keeps connections open, as a
// busy caller would.
func newInvoker(base string, conns int) *invoker {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(conns, 2)
	return &invoker{base: strings.TrimRight(base, "/"), hc: &http.Client{Transport: tr}}
}

// run POSTs Lua source as a run of id on profile and returns the answer and
// how long the whole request took. A run that did not end with reason ok
// is an error.
func (v *invoker) run(ctx context.Context, id, profile, src string) (invokeapi.RunResponse, time.Duration, error) {
	url := invokeapi.RunPath(v.base, id, profile)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(src))
	if err != nil {
		return invokeapi.RunResponse{}, 0, fmt.Errorf("run %s: %w", id, err)
	}
	req.Header.Set("Content-Type", "text/x-lua")
	start := time.Now()
	resp, err := v.hc.Do(req)
	if err != nil {
		return invokeapi.RunResponse{}, 0, fmt.Errorf("run %s: %w", id, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return invokeapi.RunResponse{}, took, fmt.Errorf("run %s: read answer: %w", id, err)
	}
	if resp.StatusCode != http.StatusOK {
		return invokeapi.RunResponse{}, took, fmt.Errorf("run %s: %s: %s", id, resp.Status, strings.TrimSpace(string(body)))
	}
	var a invokeapi.RunResponse
	if err := json.Unmarshal(body, &a); err != nil {
		return invokeapi.RunResponse{}, took, fmt.Errorf("run %s: decode answer: %w", id, err)
	}
	if a.Reason != string(protocol.ReasonOK) {
		return a, took, fmt.Errorf("run %s ended with reason %q: %s", id, a.Reason, a.Error)
	}
	return a, took, nil
}

// runFour runs `return 2 + 2` and checks that the answer is 4.
func (v *invoker) runFour(ctx context.Context, id, profile string) (time.Duration, error) {
	a, took, err := v.run(ctx, id, profile, "return 2 + 2")
	if err != nil {
		return took, err
	}
	if string(a.Result) != "4" {
		return took, fmt.Errorf("run %s: `return 2 + 2` gave %s", id, a.Result)
	}
	return took, nil
}

// get sends a GET with extra headers and returns the status, reading and
// discarding the body.
func get(ctx context.Context, hc *http.Client, url string, header http.Header) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // drained for reuse; a body that large is not reused
	resp.Body.Close()
	return resp.StatusCode, nil
}
