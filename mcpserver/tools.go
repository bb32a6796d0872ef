package mcpserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/zap"

	caddylualambda "github.com/lualambda/caddy-lualambda"
	"github.com/lualambda/caddy-lualambda/guest/unpack"
	"github.com/lualambda/caddy-lualambda/invokeapi"
	"github.com/lualambda/caddy-lualambda/jobspec"
	"github.com/lualambda/caddy-lualambda/x402"
)

// The keys of x402's MCP transport in _meta.
const (
	// MetaPayment carries a tool call's x402 PaymentPayload.
	MetaPayment = "x402/payment"
	// MetaPaymentResponse carries a paid result's x402 SettleResponse.
	MetaPaymentResponse = "x402/payment-response"
)

// The tools' names.
const (
	ToolRunLua       = "run_lua"
	ToolListProfiles = "list_profiles"
	ToolGetOutput    = "get_output"
)

// runOutput is what run_lua and get_output return (structuredContent).
type runOutput struct {
	ID        string          `json:"id"`
	Token     string          `json:"token"`
	Profile   string          `json:"profile"`
	Reason    string          `json:"reason"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     string          `json:"error,omitempty"`
	Traceback string          `json:"traceback,omitempty"`
	Stdout    string          `json:"stdout"`
	Stderr    string          `json:"stderr"`
	OutputURL string          `json:"output_url"`
	ExpiresAt *time.Time      `json:"expires_at,omitempty"`
}

// profileInfo is one profile in list_profiles.
type profileInfo struct {
	Name        string `json:"name"`
	Price       string `json:"price,omitempty"`
	Default     bool   `json:"default,omitempty"`
	MemoryMiB   int    `json:"memory_mib"`
	VCPUs       int    `json:"vcpus"`
	TimeoutMS   int64  `json:"timeout_ms"`
	RetainS     int64  `json:"retain_seconds"`
	OutputBytes int64  `json:"max_output_bytes"`
	Runtime     string `json:"runtime"`
}

// profilesOutput is what list_profiles returns.
type profilesOutput struct {
	Profiles []profileInfo `json:"profiles"`
}

// runInput is run_lua's arguments.
type runInput struct {
	Code     string          `json:"code"`
	Module   string          `json:"module"`
	Packages []packageInput  `json:"packages"`
	Args     json.RawMessage `json:"args"`
	Profile  string          `json:"profile"`
	ID       string          `json:"id"`
}

type packageInput struct {
	Name      string `json:"name"`
	ZipBase64 string `json:"zip_base64"`
}

// outputInput is get_output's arguments.
type outputInput struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// pkg is a decoded package.
type pkg struct {
	name string
	zip  []byte
}

// newServer builds the MCP server with the three tools, described with
// prices when paid.
func (h *Handler) newServer(paid bool) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "lualambda", Title: "lualambda: Lua in fresh microVMs", Version: "1"}, &mcp.ServerOptions{
		Instructions: "Runs Lua code in a fresh, single-use microVM per call (run_lua). list_profiles shows the VM sizes, limits and prices; get_output reads a past run's output again with its id and token.",
	})
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(bool)}
	s.AddTool(&mcp.Tool{
		Name:         ToolRunLua,
		Title:        "Run Lua in a fresh microVM",
		Description:  h.runDescription(paid),
		InputSchema:  h.runInputSchema(),
		OutputSchema: runOutputSchema(true),
		Annotations:  &mcp.ToolAnnotations{OpenWorldHint: new(bool), DestructiveHint: new(bool)},
	}, h.runLua)
	s.AddTool(&mcp.Tool{
		Name:         ToolListProfiles,
		Title:        "List the VM profiles",
		Description:  "List the VM profiles run_lua can use: each profile's memory for Lua (memory_mib), CPUs, wall-clock limit of a run (timeout_ms), how long the output stays readable with get_output (retain_seconds), the cap on stdout and stderr together (max_output_bytes), the Lua runtime (luajit = LuaJIT 2.1, Lua 5.1 with ffi and bit; lua5.4 = Lua 5.4 with integers and utf8) and the price per run_lua call in USD, paid in USDC with x402 (absent: free). default marks the profile run_lua uses when none is given. Free.",
		InputSchema:  json.RawMessage(`{"type":"object","properties":{},"additionalProperties":false}`),
		OutputSchema: profilesOutputSchema,
		Annotations:  readOnly,
	}, h.listProfiles)
	s.AddTool(&mcp.Tool{
		Name:         ToolGetOutput,
		Title:        "Read a past run's output",
		Description:  "Read the output of an earlier run_lua call again, with the id and token that call returned: the same fields as run_lua's result. It fails when the token is wrong, the id unknown, the run still going, or the output has expired (see retain_seconds in list_profiles). Free.",
		InputSchema:  outputInputSchema,
		OutputSchema: runOutputSchema(false),
		Annotations:  readOnly,
	}, h.getOutput)
	return s
}

// defaultProfile is the profile run_lua uses when the call names none.
func (h *Handler) defaultProfile() string { return h.profiles[0].Name }

// free reports whether price is no charge.
func free(price string) bool {
	if price == "" {
		return true
	}
	n, err := x402.ParsePrice(price, x402.USDCDecimals)
	return err == nil && n == 0
}

// profileSummary describes the profiles in a line each.
func (h *Handler) profileSummary(paid bool) string {
	var b strings.Builder
	for _, p := range h.profiles {
		runtime := p.Runtime
		if runtime == "" {
			runtime = "luajit"
		}
		price := "free"
		if paid && !free(p.Price) {
			price = "$" + p.Price + " per run"
		}
		fmt.Fprintf(&b, "\n- %s: %s, %d MiB, %s, output cap %s, %s", p.Name, price, p.MemoryMiB, time.Duration(p.Timeout), humanize.IBytes(uint64(p.OutputBytes)), runtime)
	}
	return b.String()
}

func (h *Handler) runDescription(paid bool) string {
	d := "Run Lua code in a fresh microVM and return its result as JSON, with what it printed. Every call gets its own clean VM (QEMU, no network, nothing kept from earlier calls) that is thrown away after the run; the profile sets the VM's limits (memory, wall-clock timeout, output cap) and the price. " +
		"Give code (Lua source) or module (a module of the packages to require), not both. " +
		"The result is the first value the code returns: tables become JSON objects or arrays, nil is null; functions, NaN and cycles are errors. print() goes to stdout, io.stderr:write() to stderr.\n" +
		"Profiles (default " + h.defaultProfile() + "):" + h.profileSummary(paid) + "\n" +
		"(luajit is LuaJIT 2.1, i.e. Lua 5.1 with ffi and bit; lua5.4 is Lua 5.4 with integers and utf8.)\n" +
		"reason says how the run ended: ok (result is the returned value), error (the code raised an error or did not compile: see error and traceback), timeout (it reached the wall-clock or CPU limit), memory (it reached the memory limit), output_cap (stdout and stderr reached the cap; output up to it is kept), exit (os.exit or a signal ended it), crash (the VM failed, not the code). " +
		"A run that started is charged whatever its reason; a call refused before it started costs nothing.\n" +
		"Keep id and token: get_output reads the output again until it expires, and output_url serves it over HTTP with the token as a bearer token."
	if paid {
		d += "\nPayment (x402, USDC): calling a priced profile without payment returns an error result whose structuredContent is the x402 PaymentRequired (x402Version, accepts). Sign a PaymentPayload for one of accepts and call again with the same arguments and the payload in _meta[\"x402/payment\"]. One payment buys one call; the result's _meta[\"x402/payment-response\"] is the settlement."
	}
	return d
}

func (h *Handler) runInputSchema() json.RawMessage {
	names := make([]string, len(h.profiles))
	for i, p := range h.profiles {
		names[i] = p.Name
	}
	schema := map[string]any{
		"type":                 "object",
		"additionalProperties": false,
		"properties": map[string]any{
			"code": map[string]any{
				"type":        "string",
				"description": "Lua source: a chunk such as `return 2 + 2`, a bare expression such as `2 + 2`, or a chunk that returns a function, which is called with the args table. The chunk itself receives the args as `...`. It may require modules of the packages. Give code or module, not both.",
			},
			"module": map[string]any{
				"type":        "string",
				"pattern":     `^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`,
				"description": "Instead of code: the dotted name of a module to require from the packages, e.g. `blah.dorp` for blah/dorp.lua in the package blah (`blah` alone loads blah/init.lua or blah.lua). A module that returns a function is called with the args table; otherwise what it returns is the result.",
			},
			"packages": map[string]any{
				"type":        "array",
				"maxItems":    h.MaxPackages,
				"description": fmt.Sprintf("Zip archives of Lua modules for require, each under its name: `require('blah.x')` finds blah/x.lua in the package blah (a zip whose files are not under blah/ is placed there). At most %d packages, %d bytes unzipped in all. Default: none.", h.MaxPackages, h.MaxUnpackedBytes),
				"items": map[string]any{
					"type":                 "object",
					"additionalProperties": false,
					"required":             []string{"name", "zip_base64"},
					"properties": map[string]any{
						"name":       map[string]any{"type": "string", "pattern": `^[A-Za-z0-9_-]{1,64}$`, "description": "The package's name: the first part of the module names it holds."},
						"zip_base64": map[string]any{"type": "string", "contentEncoding": "base64", "contentMediaType": "application/zip", "description": "The zip file (STORED or DEFLATE), base64-encoded."},
					},
				},
			},
			"args": map[string]any{
				"description": "The arguments, as JSON. An array is the argument list: code gets its elements as `...`, and a function that the code or the module returns gets the whole array as one table (args[1], args[2], ...). Any other value is the single argument (null or absent: no arguments). A null inside the array arrives as lualambda.null.",
			},
			"profile": map[string]any{
				"type":        "string",
				"enum":        names,
				"default":     h.defaultProfile(),
				"description": "The VM profile: its memory, time limit, output cap, Lua runtime and price (see list_profiles). Default: " + h.defaultProfile() + ".",
			},
			"id": map[string]any{
				"type":        "string",
				"pattern":     `^[A-Za-z0-9_-]{1,64}$`,
				"description": "The run's id: one run per id on this server, ever. Default: a new random id. Give your own only to make a retry safe: a second call with a used id runs nothing and is not charged (a payment sent with it is used up).",
			},
		},
	}
	b, _ := json.Marshal(schema)
	return b
}

// runResultSchema is the schema of a run's output.
const runResultSchema = `{
	"type": "object",
	"required": ["id", "token", "profile", "reason", "stdout", "stderr", "output_url"],
	"properties": {
		"id": {"type": "string", "description": "The run's id."},
		"token": {"type": "string", "description": "The capability token that reads the output again (get_output, or output_url as a bearer token)."},
		"profile": {"type": "string", "description": "The profile it ran on."},
		"reason": {"type": "string", "enum": ["ok", "error", "timeout", "memory", "output_cap", "exit", "crash"], "description": "How the run ended."},
		"result": {"description": "The value the code returned, as JSON (reason ok)."},
		"error": {"type": "string", "description": "What went wrong, when reason is not ok."},
		"traceback": {"type": "string", "description": "The Lua traceback of an error."},
		"stdout": {"type": "string", "description": "What the code printed."},
		"stderr": {"type": "string", "description": "What the code wrote to stderr."},
		"output_url": {"type": "string", "description": "Where the output can be read again over HTTP (GET, Authorization: Bearer <token>)."},
		"expires_at": {"type": "string", "format": "date-time", "description": "When the output stops being readable."}
	}
}`

// paymentRequiredSchema is the schema of x402's PaymentRequired, which a
// paid tool returns as the structuredContent of an error result.
const paymentRequiredSchema = `{
	"type": "object",
	"description": "x402 PaymentRequired (an error result: payment is needed or was refused)",
	"required": ["x402Version", "accepts"],
	"properties": {
		"x402Version": {"type": "integer"},
		"error": {"type": "string"},
		"resource": {"type": "object"},
		"accepts": {"type": "array", "items": {"type": "object"}}
	}
}`

// runOutputSchema is the output schema of run_lua (withPayment: a run, or
// the payment requirements of an error result) and get_output.
func runOutputSchema(withPayment bool) json.RawMessage {
	if !withPayment {
		return json.RawMessage(runResultSchema)
	}
	return json.RawMessage(`{"type": "object", "description": "The run's output; on an error result that asks for payment, the x402 PaymentRequired.", "anyOf": [` + runResultSchema + `, ` + paymentRequiredSchema + `]}`)
}

var profilesOutputSchema = json.RawMessage(`{
	"type": "object",
	"required": ["profiles"],
	"properties": {
		"profiles": {"type": "array", "items": {
			"type": "object",
			"required": ["name", "memory_mib", "vcpus", "timeout_ms", "retain_seconds", "max_output_bytes", "runtime"],
			"properties": {
				"name": {"type": "string", "description": "The profile's name, for run_lua's profile."},
				"price": {"type": "string", "description": "USD (paid in USDC with x402) per run_lua call; absent when free."},
				"default": {"type": "boolean", "description": "true for the profile run_lua uses when none is given."},
				"memory_mib": {"type": "integer", "description": "Memory Lua may use, MiB."},
				"vcpus": {"type": "integer"},
				"timeout_ms": {"type": "integer", "description": "Wall-clock limit of a run."},
				"retain_seconds": {"type": "integer", "description": "How long get_output can read a run's output."},
				"max_output_bytes": {"type": "integer", "description": "Cap on stdout and stderr together."},
				"runtime": {"type": "string", "enum": ["luajit", "lua5.4"]}
			}
		}}
	}
}`)

var outputInputSchema = json.RawMessage(`{
	"type": "object",
	"additionalProperties": false,
	"required": ["id", "token"],
	"properties": {
		"id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "The id run_lua returned."},
		"token": {"type": "string", "description": "The token run_lua returned with it."}
	}
}`)

// callFrom returns the HTTP facts of a tool call. Without them the call did
// not come through ServeHTTP, and nothing may run: in front of a gate it
// would run unpaid.
func callFrom(ctx context.Context) (*call, error) {
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil {
		return nil, errors.New("lualambda_mcp: the tool call carries no request context")
	}
	return c, nil
}

// toolError is an error result with msg as its text.
func toolError(msg string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: msg}}}
}

// text is a result's first text.
func text(res *mcp.CallToolResult) string {
	if len(res.Content) == 0 {
		return ""
	}
	if tc, ok := res.Content[0].(*mcp.TextContent); ok {
		return tc.Text
	}
	return ""
}

// failed logs a failure of the server's side and returns it as a tool
// error: nothing ran, or the run's answer was lost; nothing was paid.
func (h *Handler) failed(tool string, err error) (*mcp.CallToolResult, error) {
	h.logger.Error("serving a tool call", zap.String("tool", tool), zap.Error(err))
	return toolError(tool + " failed on the server's side; nothing was paid: " + err.Error()), nil
}

// paymentResult is the error result that carries payment requirements:
// structuredContent is the PaymentRequired, content[0].text its JSON.
func paymentResult(pr x402.PaymentRequired) *mcp.CallToolResult {
	b, _ := json.Marshal(pr)
	return &mcp.CallToolResult{IsError: true, StructuredContent: json.RawMessage(b), Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}}
}

// decodeArgs decodes a call's arguments strictly into v.
func decodeArgs(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		raw = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad arguments: %w", err)
	}
	return nil
}

// prepared is a checked run_lua call.
type prepared struct {
	id      string
	profile caddylualambda.Profile
	spec    spec
	pkgs    []pkg
}

// prepare checks run_lua's arguments as far as it can before anything is
// paid: a mistake found here costs the caller nothing, not even a payment.
func (h *Handler) prepare(in runInput) (*prepared, error) {
	p := &prepared{id: in.ID}
	name := in.Profile
	if name == "" {
		name = h.defaultProfile()
	}
	found := false
	for _, prof := range h.profiles {
		if prof.Name == name {
			p.profile, found = prof, true
		}
	}
	if !found {
		names := make([]string, len(h.profiles))
		for i, prof := range h.profiles {
			names[i] = prof.Name
		}
		return nil, fmt.Errorf("no profile %q; profiles: %s", name, strings.Join(names, ", "))
	}
	switch {
	case in.Code != "" && in.Module != "":
		return nil, errors.New("give code or module, not both")
	case in.Code == "" && in.Module == "":
		return nil, errors.New("nothing to run: give code (Lua source) or module (a module of the packages)")
	case in.Module != "" && !jobspec.ValidModule(in.Module):
		return nil, fmt.Errorf("module %q: want a dotted Lua module name such as blah.dorp", in.Module)
	}
	if p.id == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		p.id = "mcp-" + hex.EncodeToString(b)
	} else if !jobspec.ValidID(p.id) {
		return nil, fmt.Errorf("id %q: want 1-64 of A-Z a-z 0-9 _ -", p.id)
	}
	if len(in.Packages) > h.MaxPackages {
		return nil, fmt.Errorf("too many packages: at most %d", h.MaxPackages)
	}
	var total int64
	for i, ip := range in.Packages {
		if !unpack.ValidName(ip.Name) {
			return nil, fmt.Errorf("packages[%d].name %q: want 1-64 of A-Z a-z 0-9 _ -", i, ip.Name)
		}
		for _, seen := range p.pkgs {
			if seen.name == ip.Name {
				return nil, fmt.Errorf("package %s is given twice", ip.Name)
			}
		}
		z, err := base64.StdEncoding.DecodeString(ip.ZipBase64)
		if err != nil {
			return nil, fmt.Errorf("packages[%d] (%s): zip_base64 is not base64: %w", i, ip.Name, err)
		}
		total += int64(len(z))
		if total > h.MaxUploadBytes {
			return nil, fmt.Errorf("the packages are larger than %d bytes", h.MaxUploadBytes)
		}
		p.pkgs = append(p.pkgs, pkg{name: ip.Name, zip: z})
	}
	p.spec = spec{Source: in.Code, Require: in.Module}
	if args := bytes.TrimSpace(in.Args); len(args) > 0 && string(args) != "null" {
		if args[0] == '[' {
			if err := json.Unmarshal(args, &p.spec.Args); err != nil {
				return nil, fmt.Errorf("args: %w", err)
			}
		} else {
			p.spec.Args = []json.RawMessage{json.RawMessage(args)}
		}
	}
	return p, nil
}

// runLua is run_lua's handler.
func (h *Handler) runLua(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	c, err := callFrom(ctx)
	if err != nil {
		return nil, err
	}
	var in runInput
	if err := decodeArgs(req.Params.Arguments, &in); err != nil {
		return toolError(err.Error()), nil
	}
	p, err := h.prepare(in)
	if err != nil {
		return toolError(err.Error()), nil
	}
	ct, body, err := runBody(p.spec, p.pkgs)
	if err != nil {
		return h.failed(ToolRunLua, err)
	}
	path := invokeapi.RunPath("", p.id, p.profile.Name)
	run := func(ctx context.Context) (*recorder, error) {
		rec := newRecorder()
		r, err := innerRequest(ctx, c, rec, http.MethodPost, path, ct, body)
		if err != nil {
			return nil, err
		}
		return h.serve(rec, r)
	}
	if c.seller == nil || free(p.profile.Price) {
		rec, err := run(ctx)
		if err != nil {
			return h.failed(ToolRunLua, err)
		}
		return h.runResult(c, rec), nil
	}
	resource := x402.ResourceInfo{
		URL:         "mcp://tool/" + ToolRunLua,
		Description: "run_lua on profile " + p.profile.Name + ": Lua in a fresh microVM",
		MimeType:    "application/json",
	}
	payment, ok := req.Params.Meta[MetaPayment]
	if !ok || payment == nil {
		pr, err := c.seller.Required(ctx, p.profile.Price, resource, "Payment required")
		if err != nil {
			return h.failed(ToolRunLua, fmt.Errorf("payment requirements: %w", err))
		}
		if pr.Extensions, err = h.bazaarExtensions(true); err != nil {
			return h.failed(ToolRunLua, fmt.Errorf("payment requirements: %w", err))
		}
		return paymentResult(pr), nil
	}
	raw, err := json.Marshal(payment)
	if err != nil {
		return toolError("_meta[\"x402/payment\"] is not JSON: " + err.Error()), nil
	}
	var rec *recorder
	sale, err := c.seller.Sell(ctx, raw, p.profile.Price, resource, func(sctx context.Context) error {
		var err error
		rec, err = run(sctx)
		return err
	})
	switch {
	case err != nil:
		return h.failed(ToolRunLua, fmt.Errorf("selling the run: %w", err))
	case sale.Refused != nil:
		return paymentResult(*sale.Refused), nil
	case rec == nil:
		return toolError("the run did not happen; nothing was paid"), nil
	case !sale.Charged:
		// The handler refused the run (a used id, no VM, a bad package):
		// its answer says why; the payment did not move, and it bought
		// this answer, so it buys nothing more.
		res := h.runResult(c, rec)
		if res.IsError {
			res.Content = []mcp.Content{&mcp.TextContent{Text: text(res) + "; nothing was charged, and this payment is used up: sign a new one to try again"}}
		}
		return res, nil
	}
	res := h.runResult(c, rec)
	res.Meta = mcp.Meta{MetaPaymentResponse: sale.Settlement}
	return res, nil
}

// runResult turns the invocation API's answer to a run into the tool's
// result.
func (h *Handler) runResult(c *call, rec *recorder) *mcp.CallToolResult {
	if rec.code() != http.StatusOK {
		msg := rec.errorText()
		if ra := rec.header.Get("Retry-After"); ra != "" {
			msg += " (retry after " + ra + " s)"
		}
		return toolError(msg)
	}
	var rr invokeapi.RunResponse
	if err := json.Unmarshal(rec.body.Bytes(), &rr); err != nil {
		return toolError("unreadable answer from the run: " + err.Error())
	}
	return h.outputResult(c, rr, rr.Token)
}

// outputResult is the tool result of a run's output.
func (h *Handler) outputResult(c *call, rr invokeapi.RunResponse, token string) *mcp.CallToolResult {
	out := runOutput{
		ID: rr.ID, Token: token, Profile: rr.Profile, Reason: rr.Reason, Result: rr.Result, Error: rr.Error,
		Traceback: rr.Traceback, Stdout: rr.Stdout, Stderr: rr.Stderr, OutputURL: c.endpoint + "/" + rr.ID + "/output",
	}
	if !rr.ExpiresAt.IsZero() {
		t := rr.ExpiresAt
		out.ExpiresAt = &t
	}
	b, _ := json.Marshal(out)
	return &mcp.CallToolResult{StructuredContent: json.RawMessage(b), Content: []mcp.Content{&mcp.TextContent{Text: summary(out)}}}
}

// summary is a run's output as short text for a model or a person.
func summary(o runOutput) string {
	var b strings.Builder
	if o.Reason == "ok" {
		fmt.Fprintf(&b, "result: %s\n", o.Result)
	} else {
		fmt.Fprintf(&b, "the run ended with reason %s: %s\n", o.Reason, o.Error)
		if o.Traceback != "" {
			fmt.Fprintf(&b, "traceback:\n%s\n", o.Traceback)
		}
	}
	if o.Stdout != "" {
		fmt.Fprintf(&b, "stdout:\n%s\n", strings.TrimSuffix(o.Stdout, "\n"))
	}
	if o.Stderr != "" {
		fmt.Fprintf(&b, "stderr:\n%s\n", strings.TrimSuffix(o.Stderr, "\n"))
	}
	fmt.Fprintf(&b, "(id %s, profile %s; get_output with this id and token reads it again)", o.ID, o.Profile)
	return b.String()
}

// listProfiles is list_profiles' handler: the invocation API's discovery,
// with the price a call here costs.
func (h *Handler) listProfiles(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	c, err := callFrom(ctx)
	if err != nil {
		return nil, err
	}
	var none struct{}
	if err := decodeArgs(req.Params.Arguments, &none); err != nil {
		return toolError(err.Error()), nil
	}
	rec := newRecorder()
	r, err := innerRequest(ctx, c, rec, http.MethodGet, "/", "", nil)
	if err != nil {
		return h.failed(ToolListProfiles, err)
	}
	if _, err := h.serve(rec, r); err != nil {
		return h.failed(ToolListProfiles, err)
	}
	var d invokeapi.Discovery
	if rec.code() != http.StatusOK {
		return toolError(rec.errorText()), nil
	}
	if err := json.Unmarshal(rec.body.Bytes(), &d); err != nil {
		return toolError("unreadable discovery: " + err.Error()), nil
	}
	out := profilesOutput{Profiles: []profileInfo{}}
	for _, p := range d.Profiles {
		pi := profileInfo{
			Name: p.Name, Default: p.Name == h.defaultProfile(), MemoryMiB: p.MemoryMiB, VCPUs: p.VCPUs,
			TimeoutMS: p.TimeoutMS, RetainS: p.RetainS, OutputBytes: p.OutputBytes, Runtime: p.Runtime,
		}
		if c.seller != nil && !free(p.Price) {
			pi.Price = p.Price
		}
		out.Profiles = append(out.Profiles, pi)
	}
	b, _ := json.Marshal(out)
	return &mcp.CallToolResult{StructuredContent: json.RawMessage(b), Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}}, nil
}

// getOutput is get_output's handler: the invocation API's output route
// with the token.
func (h *Handler) getOutput(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	c, err := callFrom(ctx)
	if err != nil {
		return nil, err
	}
	var in outputInput
	if err := decodeArgs(req.Params.Arguments, &in); err != nil {
		return toolError(err.Error()), nil
	}
	if !jobspec.ValidID(in.ID) {
		return toolError(fmt.Sprintf("id %q: want the id run_lua returned (1-64 of A-Z a-z 0-9 _ -)", in.ID)), nil
	}
	if in.Token == "" {
		return toolError("token is required: the token run_lua returned with the id"), nil
	}
	rec := newRecorder()
	r, err := innerRequest(ctx, c, rec, http.MethodGet, invokeapi.OutputPath("", in.ID), "", nil)
	if err != nil {
		return h.failed(ToolGetOutput, err)
	}
	r.Header.Set("Authorization", "Bearer "+in.Token)
	if _, err := h.serve(rec, r); err != nil {
		return h.failed(ToolGetOutput, err)
	}
	if rec.code() != http.StatusOK {
		return toolError(rec.errorText()), nil
	}
	var rr invokeapi.RunResponse
	if err := json.Unmarshal(rec.body.Bytes(), &rr); err != nil {
		return toolError("unreadable output: " + err.Error()), nil
	}
	return h.outputResult(c, rr, in.Token), nil
}
