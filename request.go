package caddylualambda

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"

	"github.com/lualambda/caddy-lualambda/guest/unpack"
	"github.com/lualambda/caddy-lualambda/jobspec"
)

// runRequest is a validated run request.
type runRequest struct {
	Source   string
	Require  string
	Args     []json.RawMessage
	Packages []jobspec.Package
}

// spec is the JSON "spec" part of a multipart run request, or the body of
// an application/json one.
type spec struct {
	Require string            `json:"require"`
	Source  string            `json:"source"`
	Args    []json.RawMessage `json:"args"`
}

// requestError is a client error with its HTTP status.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, a...)}
}

// requestLimits bound what parseRunRequest accepts.
type requestLimits struct {
	// allowEmpty accepts a request with nothing to run (a session).
	allowEmpty   bool
	maxBody      int64
	maxPackages  int
	unpackLimits unpack.Limits
}

// parseRunRequest reads and validates a run request body: a multipart form
// with "package" zips and a "spec", a text/x-lua body, or a JSON spec.
func parseRunRequest(r *http.Request, lim requestLimits) (*runRequest, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" && lim.allowEmpty && r.ContentLength <= 0 {
		req := &runRequest{}
		return req, nil
	}
	if ct == "" {
		return nil, &requestError{http.StatusUnsupportedMediaType, "missing Content-Type: use multipart/form-data, text/x-lua or application/json"}
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, &requestError{http.StatusUnsupportedMediaType, "bad Content-Type: " + err.Error()}
	}
	body := http.MaxBytesReader(nil, r.Body, lim.maxBody)
	var req runRequest
	switch mt {
	case "text/x-lua", "application/x-lua", "text/plain":
		src, err := io.ReadAll(body)
		if err != nil {
			return nil, bodyError(err, lim.maxBody)
		}
		req.Source = string(src)
		if req.Args, err = queryArgs(r); err != nil {
			return nil, err
		}
	case "application/json":
		var s spec
		dec := json.NewDecoder(body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, bodyError(err, lim.maxBody)
			}
			return nil, badRequest("bad JSON spec: %v", err)
		}
		req.Source, req.Require, req.Args = s.Source, s.Require, s.Args
	case "multipart/form-data":
		if params["boundary"] == "" {
			return nil, badRequest("multipart body without a boundary")
		}
		if err := readMultipart(multipart.NewReader(body, params["boundary"]), &req, lim); err != nil {
			return nil, err
		}
	default:
		return nil, &requestError{http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported Content-Type %q: use multipart/form-data, text/x-lua or application/json", mt)}
	}
	return &req, validateRun(&req, lim)
}

// readMultipart reads the "package" and "spec" parts.
func readMultipart(mr *multipart.Reader, req *runRequest, lim requestLimits) error {
	sawSpec := false
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return bodyError(err, lim.maxBody)
		}
		data, err := io.ReadAll(part)
		part.Close()
		if err != nil {
			return bodyError(err, lim.maxBody)
		}
		switch part.FormName() {
		case "package":
			if len(req.Packages) >= lim.maxPackages {
				return &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("too many packages: at most %d", lim.maxPackages)}
			}
			name, ok := strings.CutSuffix(part.FileName(), ".zip")
			if !ok || !unpack.ValidName(name) {
				return badRequest("package file name %q: want NAME.zip with NAME of 1-64 A-Z a-z 0-9 _ -", part.FileName())
			}
			for _, p := range req.Packages {
				if p.Name == name {
					return badRequest("package %s is given twice", name)
				}
			}
			req.Packages = append(req.Packages, jobspec.Package{Name: name, Data: data})
		case "spec":
			if sawSpec {
				return badRequest("spec is given twice")
			}
			sawSpec = true
			var s spec
			dec := json.NewDecoder(strings.NewReader(string(data)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&s); err != nil {
				return badRequest("bad spec: %v", err)
			}
			req.Source, req.Require, req.Args = s.Source, s.Require, s.Args
		default:
			return badRequest("unexpected form field %q: want package and spec", part.FormName())
		}
	}
	return nil
}

// validateRun checks the request's code, module and packages.
func validateRun(req *runRequest, lim requestLimits) error {
	if req.Source == "" && req.Require == "" && !lim.allowEmpty {
		return badRequest("nothing to run: give Lua source, or packages and a spec with require")
	}
	if req.Require != "" {
		if !jobspec.ValidModule(req.Require) {
			return badRequest("require %q: want a dotted Lua module name such as blah.dorp", req.Require)
		}
		if req.Source == "" {
			top, _, _ := strings.Cut(req.Require, ".")
			found := false
			for _, p := range req.Packages {
				found = found || p.Name == top
			}
			if !found {
				return badRequest("require %q: no package named %s.zip was sent", req.Require, top)
			}
		}
	}
	for i, a := range req.Args {
		if !json.Valid(a) {
			return badRequest("args[%d] is not valid JSON", i)
		}
	}
	// Each package is parsed once; its entry count is checked against what
	// is left of the limit before any entry is parsed.
	files, bytes := 0, int64(0)
	tooMany := func() error {
		return &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("packages hold more than %d entries", lim.unpackLimits.Files)}
	}
	for _, p := range req.Packages {
		var left unpack.Limits
		if lim.unpackLimits.Files > 0 {
			if files >= lim.unpackLimits.Files {
				left.Files = 1 // 0 would mean no limit: the total below decides
			} else {
				left.Files = lim.unpackLimits.Files - files
			}
		}
		sum, err := unpack.Scan(p.Name, p.Data, left)
		if errors.Is(err, unpack.ErrLimit) {
			return tooMany()
		}
		if err != nil {
			return badRequest("%v", err)
		}
		files += sum.Files
		if lim.unpackLimits.Files > 0 && files > lim.unpackLimits.Files {
			return tooMany()
		}
		bytes += sum.DeclaredBytes
		if lim.unpackLimits.Bytes > 0 && bytes > lim.unpackLimits.Bytes {
			return &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("packages unpack to more than %d bytes", lim.unpackLimits.Bytes)}
		}
	}
	return nil
}

// queryArgs reads args for a raw Lua body from the query: args=<JSON array>,
// or repeated arg=<value> (JSON if it parses, else a string).
func queryArgs(r *http.Request) ([]json.RawMessage, error) {
	q := r.URL.Query()
	if a := q.Get("args"); a != "" {
		var args []json.RawMessage
		if err := json.Unmarshal([]byte(a), &args); err != nil {
			return nil, badRequest("args must be a JSON array: %v", err)
		}
		return args, nil
	}
	var args []json.RawMessage
	for _, a := range q["arg"] {
		args = append(args, jobspec.ParseArg(a))
	}
	return args, nil
}

// bodyError maps a body read error to 413 or 400.
func bodyError(err error, max int64) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", max)}
	}
	return badRequest("reading the request body: %v", err)
}
