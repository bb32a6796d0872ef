package mcpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/lualambda/caddy-lualambda/invokeapi"
)

// innerRequest builds an in-process request to the embedded lualambda
// handler with ctx (which may carry a payment gate), prepared as Caddy's
// server prepares a request: its own replacer, vars and original request,
// the client's address and the headers that may name it.
func innerRequest(ctx context.Context, c *call, w http.ResponseWriter, method, path, contentType string, body []byte) (*http.Request, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		return nil, fmt.Errorf("building the in-process request: %w", err)
	}
	r.RemoteAddr = c.remoteAddr
	r.Header = c.header.Clone()
	r.Header.Set("Accept", "application/json")
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	r.RequestURI = path
	return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, c.server), nil
}

// recorder is the response writer of an in-process request: it keeps the
// status, the headers and the body.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

// Header implements http.ResponseWriter.
func (rec *recorder) Header() http.Header { return rec.header }

// WriteHeader implements http.ResponseWriter.
func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
	}
}

// Write implements http.ResponseWriter.
func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.body.Write(b)
}

// code is the answer's status (200 when the handler wrote nothing).
func (rec *recorder) code() int {
	if rec.status == 0 {
		return http.StatusOK
	}
	return rec.status
}

// errorText is the message of an error answer ({"error": ...}), or its
// body when it is not one.
func (rec *recorder) errorText() string {
	var e invokeapi.Error
	if json.Unmarshal(rec.body.Bytes(), &e) == nil && e.Error != "" {
		return e.Error
	}
	if rec.body.Len() == 0 {
		return http.StatusText(rec.code())
	}
	return rec.body.String()
}

// serve runs an in-process request through the embedded handler into
// rec.
func (h *Handler) serve(rec *recorder, r *http.Request) (*recorder, error) {
	if err := h.Handler.ServeHTTP(rec, r, nil); err != nil {
		return nil, fmt.Errorf("lualambda handler: %w", err)
	}
	return rec, nil
}

// spec is the JSON spec of a run (the invocation API's application/json
// body and multipart spec part).
type spec struct {
	Source  string            `json:"source,omitempty"`
	Require string            `json:"require,omitempty"`
	Args    []json.RawMessage `json:"args,omitempty"`
}

// runBody encodes a run for the invocation API: a JSON spec, or a
// multipart form with the package zips when there are packages.
func runBody(s spec, pkgs []pkg) (contentType string, body []byte, err error) {
	js, err := json.Marshal(s)
	if err != nil {
		return "", nil, fmt.Errorf("encoding the run: %w", err)
	}
	if len(pkgs) == 0 {
		return "application/json", js, nil
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range pkgs {
		hdr := textproto.MIMEHeader{}
		hdr.Set("Content-Disposition", fmt.Sprintf(`form-data; name="package"; filename="%s.zip"`, p.name))
		hdr.Set("Content-Type", "application/zip")
		w, err := mw.CreatePart(hdr)
		if err != nil {
			return "", nil, fmt.Errorf("encoding package %s: %w", p.name, err)
		}
		if _, err := w.Write(p.zip); err != nil {
			return "", nil, fmt.Errorf("encoding package %s: %w", p.name, err)
		}
	}
	w, err := mw.CreateFormField("spec")
	if err != nil {
		return "", nil, fmt.Errorf("encoding the run: %w", err)
	}
	if _, err := w.Write(js); err != nil {
		return "", nil, fmt.Errorf("encoding the run: %w", err)
	}
	if err := mw.Close(); err != nil {
		return "", nil, fmt.Errorf("encoding the run: %w", err)
	}
	return mw.FormDataContentType(), buf.Bytes(), nil
}
