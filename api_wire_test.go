package caddylualambda

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/lualambda/caddy-lualambda/invokeapi"
	"github.com/lualambda/caddy-lualambda/store"
)

// The API's documents, byte for byte as the server sent them before the
// wire types moved to package invokeapi (recorded from that code with the
// values below). A change here is a change to the wire format.
const (
	wireRun              = `{"id":"abc","profile":"nano","reason":"ok","result":{"a":[1,"<x>"]},"error":"e<&>","traceback":"tb","stdout":"so","stderr":"se","timings":{"queue_ms":1.5,"vm_ms":2,"lua_ms":0.25,"total_ms":4},"receipt":{"txid":"TX","network":"algorand:x","payer":"P","amount":"1000","asset":"31566704","explorer_url":"https://e/tx/TX"},"expires_at":"2025-03-04T05:07:37.89Z","state":"done","token":"tok","status":"/invoke/abc","output":"/invoke/abc/output"}`
	wireRunUnstored      = `{"id":"abc","profile":"nano","reason":"timeout","stdout":"","stderr":"","timings":{"queue_ms":0,"vm_ms":0,"lua_ms":0,"total_ms":0},"expires_at":"0001-01-01T00:00:00Z","state":"running","token":"tok","status":"/abc","output":"/abc/output"}`
	wireOutput           = `{"id":"abc","profile":"nano","reason":"ok","result":{"a":[1,"<x>"]},"error":"e<&>","traceback":"tb","stdout":"so","stderr":"se","timings":{"queue_ms":1.5,"vm_ms":2,"lua_ms":0.25,"total_ms":4},"receipt":{"txid":"TX","network":"algorand:x","payer":"P","amount":"1000","asset":"31566704","explorer_url":"https://e/tx/TX"},"expires_at":"2025-03-04T05:07:37.89Z"}`
	wireOutputMinimal    = `{"id":"abc","profile":"nano","reason":"timeout","stdout":"","stderr":"","timings":{"queue_ms":0,"vm_ms":0,"lua_ms":0,"total_ms":0},"expires_at":"0001-01-01T00:00:00Z"}`
	wireStatus           = `{"id":"abc","state":"done","reason":"ok","profile":"nano","packages":[{"name":"blah","hash":"h1"}],"require":"blah.dorp","args_hash":"ah","created_at":"2025-03-04T05:06:07.89Z","finished_at":"2025-03-04T05:07:37.89Z","expires_at":"2025-03-04T05:07:37.89Z","paid":true,"output":"/abc/output"}`
	wireStatusRunning    = `{"id":"abc","state":"running","profile":"nano","packages":[],"args_hash":"ah","created_at":"2025-03-04T05:06:07.89Z","paid":false,"output":"/abc/output"}`
	wireConflict         = `{"error":"invocation id abc is already used","status":{"id":"abc","state":"running","profile":"nano","packages":[],"args_hash":"ah","created_at":"2025-03-04T05:06:07.89Z","paid":false,"output":"/abc/output"}}`
	wireError            = `{"error":"x"}`
	wireSessionStart     = `{"id":"abc","mode":"session","token":"tok","attach":"/abc/attach","status":"/abc","ends_by":"2025-03-04T05:07:37.89Z"}`
	wireAttachEnd        = `{"type":"end","reason":"exit","error":"boom"}`
	wireAttachEndNoError = `{"type":"end","reason":"exit"}`
	wireDiscovery        = `{"service":"lualambda","routes":{"attach":"GET /{id}/attach (WebSocket)","discovery":"GET /","output":"GET /{id}/output","run":"POST /{id}/{profile}","session":"POST /{id}/{profile}?mode=session","status":"GET /{id}"},"run":{"content_types":["multipart/form-data","text/x-lua","application/json"],"package_field":"package","spec_field":"spec","spec":{"args":"JSON array","require":"dotted module, e.g. blah.dorp","source":"Lua source (optional)"},"token":"the run's response carries a token; send it as Authorization: Bearer <token> to read the output","streaming":"text/event-stream"},"profiles":[{"name":"nano","price":"0.001","memory_mib":64,"vcpus":1,"timeout_ms":10000,"retain_seconds":60,"max_output_bytes":65536,"runtime":"luajit"},{"name":"free","memory_mib":128,"vcpus":2,"timeout_ms":1500,"retain_seconds":90,"max_output_bytes":1048576,"runtime":"luajit"}],"limits":{"max_package_files":99,"max_packages":10,"max_unpacked_bytes":2097152,"max_upload_bytes":1048576}}`
)

// wireJSON encodes v as writeJSON does.
func wireJSON(t *testing.T, v any) string {
	t.Helper()
	w := httptest.NewRecorder()
	writeJSON(w, 200, v)
	return string(bytes.TrimSuffix(w.Body.Bytes(), []byte("\n")))
}

// TestAPIWireFormat: each document the server builds encodes exactly as it
// did before, field for field and byte for byte.
func TestAPIWireFormat(t *testing.T) {
	t0 := time.Date(2025, 3, 4, 5, 6, 7, 890000000, time.UTC)
	t1 := t0.Add(90 * time.Second)
	full := &store.Output{
		ID: "abc", Profile: "nano", Reason: "ok", Result: json.RawMessage(`{"a":[1,"<x>"]}`), Error: "e<&>", Traceback: "tb",
		Stdout: "so", Stderr: "se", Timings: store.Timings{QueueMillis: 1.5, VMMillis: 2, LuaMillis: 0.25, TotalMillis: 4},
		Receipt:   &store.Receipt{TxID: "TX", Network: "algorand:x", Payer: "P", Amount: "1000", Asset: "31566704", ExplorerURL: "https://e/tx/TX"},
		ExpiresAt: t1,
	}
	minimal := &store.Output{ID: "abc", Profile: "nano", Reason: "timeout"}
	done := &store.Record{
		ID: "abc", State: "done", Reason: "ok", Profile: "nano", Packages: []store.PackageRef{{Name: "blah", Hash: "h1"}},
		Require: "blah.dorp", ArgsHash: "ah", CreatedAt: t0, Finished: &t1, ExpiresAt: &t1, Paid: true, Node: "n", TokenHash: "th",
	}
	running := &store.Record{ID: "abc", State: "running", Profile: "nano", ArgsHash: "ah", CreatedAt: t0}
	cases := []struct {
		name string
		v    any
		want string
	}{
		{"run", runAnswer("/invoke", full, "done", "tok"), wireRun},
		{"run, output not stored", runAnswer("", minimal, "running", "tok"), wireRunUnstored},
		{"output", outputOf(full), wireOutput},
		{"output, minimal", outputOf(minimal), wireOutputMinimal},
		{"status", statusOf("", done), wireStatus},
		{"status, running", statusOf("", running), wireStatusRunning},
		{"conflict", invokeapi.Conflict{Error: "invocation id abc is already used", Status: statusOf("", running)}, wireConflict},
		{"error", invokeapi.Error{Error: "x"}, wireError},
		{"session start", invokeapi.SessionStart{ID: "abc", Mode: invokeapi.ModeSession, Token: "tok", AttachPath: invokeapi.AttachPath("", "abc"), StatusPath: invokeapi.StatusPath("", "abc"), EndsBy: t1}, wireSessionStart},
		{"attach end", invokeapi.AttachMessage{Type: invokeapi.AttachEnd, Reason: "exit", Error: "boom"}, wireAttachEnd},
		{"attach end, no error", invokeapi.AttachMessage{Type: invokeapi.AttachEnd, Reason: "exit"}, wireAttachEndNoError},
	}
	for _, c := range cases {
		if got := wireJSON(t, c.v); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}

	h := &Handler{
		MaxPackages: 10, MaxUploadBytes: 1 << 20, MaxUnpackedBytes: 2 << 20, MaxPackageFiles: 99,
		profiles: map[string]*profileRuntime{
			"nano": {Profile: Profile{Name: "nano", MemoryMiB: 64, VCPUs: 1, Timeout: caddy.Duration(10 * time.Second), Retention: caddy.Duration(time.Minute), OutputBytes: 65536, Price: "0.001"}},
			"free": {Profile: Profile{Name: "free", MemoryMiB: 128, VCPUs: 2, Timeout: caddy.Duration(1500 * time.Millisecond), Retention: caddy.Duration(90 * time.Second), OutputBytes: 1 << 20}},
		},
		order: []string{"nano", "free"},
	}
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil), nil); err != nil {
		t.Fatal(err)
	}
	if got := string(bytes.TrimSuffix(w.Body.Bytes(), []byte("\n"))); w.Code != 200 || got != wireDiscovery {
		t.Errorf("discovery: %d\n got %s\nwant %s", w.Code, got, wireDiscovery)
	}

	// With an MCP endpoint, discovery links it, last.
	h.MCP = "https://example.com/mcp"
	w = httptest.NewRecorder()
	if err := h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil), nil); err != nil {
		t.Fatal(err)
	}
	wantMCP := strings.TrimSuffix(wireDiscovery, "}") + `,"mcp":"https://example.com/mcp"}`
	if got := string(bytes.TrimSuffix(w.Body.Bytes(), []byte("\n"))); w.Code != 200 || got != wantMCP {
		t.Errorf("discovery with mcp: %d\n got %s\nwant %s", w.Code, got, wantMCP)
	}
}
