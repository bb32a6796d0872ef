// Package invokeapi is the wire format of lualambda's invocation API: the
// routes, and the JSON documents the server sends and its clients (the
// lualambda CLI, the bench) read. It holds no logic beyond building paths
// and reading a streamed run's events (ReadEvents), so that a client can
// depend on it without the server.
//
// Routes, relative to where the API is mounted (base, e.g. /invoke):
//
//	GET  /                               Discovery: profiles, prices, routes, limits
//	GET  /{id}                           Status, public: never the arguments or the result
//	POST /{id}/{profile}                 a run: RunResponse, or its output as it is
//	                                     printed then the RunResponse, as Server-Sent
//	                                     Events with Accept: text/event-stream (Event)
//	POST /{id}/{profile}?mode=session    a session: SessionStart
//	GET  /{id}/output                    the retained output: RunResponse without the run's fields
//	GET  /{id}/attach                    a WebSocket to a live session: AttachMessage and terminal bytes
//
// An id is 1-64 of A-Z a-z 0-9 _ - and names one run or session, once.
//
// Auth: discovery and status are public. A run's or session's answer
// carries a capability token (also in the TokenHeader response header);
// the output and attach routes need it, as "Authorization: Bearer <token>",
// the TokenHeader request header, or a "token" query parameter. A run or
// session may also need payment (x402, HTTP 402) from a gate in front.
//
// Errors are JSON: Error, or Conflict for a 409 that says what the id
// already holds.
package invokeapi

import (
	"encoding/json"
	"time"

	"github.com/lualambda/caddy-lualambda/payhook"
)

// Route path segments and query parameters.
const (
	// OutputSegment ends the output route: GET /{id}/output.
	OutputSegment = "output"
	// AttachSegment ends the attach route: GET /{id}/attach.
	AttachSegment = "attach"
	// ModeParam is the query parameter that asks for a session instead of
	// a run, with the value ModeSession.
	ModeParam = "mode"
	// ModeSession is ModeParam's value for a session, and SessionStart's mode.
	ModeSession = "session"
	// RowsParam and ColsParam give a session's initial terminal size.
	RowsParam = "rows"
	ColsParam = "cols"
	// TokenHeader carries the capability token: in the answer to a run or
	// session, and as one way to present it.
	TokenHeader = "X-Lualambda-Token"
	// TokenParam is the query parameter that may present the token.
	TokenParam = "token"
)

// StatusPath is the path of id's status under base (base has no trailing
// slash; "" when the API is mounted at the root).
func StatusPath(base, id string) string { return base + "/" + id }

// OutputPath is the path of id's retained output under base.
func OutputPath(base, id string) string { return base + "/" + id + "/" + OutputSegment }

// AttachPath is the path of id's attach WebSocket under base.
func AttachPath(base, id string) string { return base + "/" + id + "/" + AttachSegment }

// RunPath is the path that runs id on profile under base; add
// "?mode=session" (ModeParam, ModeSession) to start a session instead.
func RunPath(base, id, profile string) string { return base + "/" + id + "/" + profile }

// Timings of a run, in milliseconds.
type Timings struct {
	// QueueMillis is the wait from the request to a VM.
	QueueMillis float64 `json:"queue_ms"`
	// VMMillis is the job's time in the VM, as the host saw it.
	VMMillis float64 `json:"vm_ms"`
	// LuaMillis is the time Lua ran, as the guest measured it.
	LuaMillis float64 `json:"lua_ms"`
	// TotalMillis is the whole request.
	TotalMillis float64 `json:"total_ms"`
}

// Receipt is a settled payment, as the payment gate reported it.
type Receipt = payhook.Receipt

// RunResponse is the answer to a run (POST /{id}/{profile}, 200): the
// run's output, then its state, token and paths. GET /{id}/output answers
// the same document without State, Token, StatusPath and OutputPath (they
// are omitted when empty; a run's answer always has them).
type RunResponse struct {
	// ID is the invocation id.
	ID string `json:"id"`
	// Profile is the profile it ran on.
	Profile string `json:"profile"`
	// Reason is how it ended: "ok", or a failure such as "error" or
	// "timeout" (guest/protocol's reasons).
	Reason string `json:"reason"`
	// Result is the value the Lua code returned, as JSON.
	Result json.RawMessage `json:"result,omitempty"`
	// Error is the failure's message.
	Error string `json:"error,omitempty"`
	// Traceback is the Lua traceback of an error.
	Traceback string `json:"traceback,omitempty"`
	// Stdout and Stderr are what the code printed (for a session: its
	// terminal transcript, in Stdout).
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	// Timings are the run's phases.
	Timings Timings `json:"timings"`
	// Receipt is the settled payment, once there is one.
	Receipt *Receipt `json:"receipt,omitempty"`
	// ExpiresAt is when the output stops being readable (the zero time
	// when the server could not store it).
	ExpiresAt time.Time `json:"expires_at"`
	// State is the invocation's state after the run: "done", or
	// "running" when the server could not store the output.
	State string `json:"state,omitempty"`
	// Token is the capability token that reads the output again.
	Token string `json:"token,omitempty"`
	// StatusPath is the path of the invocation's Status.
	StatusPath string `json:"status,omitempty"`
	// OutputPath is the path of its retained output.
	OutputPath string `json:"output,omitempty"`
}

// PackageRef names one of a run's packages by the SHA-256 of its zip.
type PackageRef struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

// Status is the public view of an invocation (GET /{id}): never its
// arguments or its result.
type Status struct {
	// ID is the invocation id.
	ID string `json:"id"`
	// State is "running", "done" or "expired" (the output is gone).
	State string `json:"state"`
	// Reason is how it ended, once it has.
	Reason string `json:"reason,omitempty"`
	// Profile is the profile it runs on.
	Profile string `json:"profile"`
	// Packages are its packages; never null.
	Packages []PackageRef `json:"packages"`
	// Require is the module it ran.
	Require string `json:"require,omitempty"`
	// ArgsHash is a keyed hash of the arguments: the caller can check
	// which arguments ran, nobody can confirm a guess.
	ArgsHash string `json:"args_hash"`
	// CreatedAt is when the request came in.
	CreatedAt time.Time `json:"created_at"`
	// FinishedAt is when it ended.
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// ExpiresAt is when its output stops being readable.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Paid says whether a payment for it settled.
	Paid bool `json:"paid"`
	// OutputPath is the path of its retained output.
	OutputPath string `json:"output"`
}

// Error is the body of every error answer: {"error": "..."}.
type Error struct {
	Error string `json:"error"`
}

// Conflict is the body of a 409 for an id that is already used, or of an
// output read while the run is still going: the error and the id's status.
type Conflict struct {
	Error  string `json:"error"`
	Status Status `json:"status"`
}

// SessionStart is the answer to POST /{id}/{profile}?mode=session (200).
type SessionStart struct {
	// ID is the session's invocation id.
	ID string `json:"id"`
	// Mode is ModeSession.
	Mode string `json:"mode"`
	// Token is the capability token to attach with.
	Token string `json:"token"`
	// AttachPath is the path of the attach WebSocket.
	AttachPath string `json:"attach"`
	// StatusPath is the path of the session's Status.
	StatusPath string `json:"status"`
	// EndsBy is when the session ends at the latest (its profile's timeout).
	EndsBy time.Time `json:"ends_by"`
}

// Types of AttachMessage.
const (
	// AttachResize (client to server) sets the terminal size.
	AttachResize = "resize"
	// AttachEnd (server to client) says the session ended, once its end
	// is in its status; the server then closes the connection.
	AttachEnd = "end"
)

// AttachMessage is a control message on the attach WebSocket, sent as a
// text frame; terminal bytes travel as binary frames both ways.
type AttachMessage struct {
	// Type is AttachResize or AttachEnd.
	Type string `json:"type"`
	// Rows and Cols are a resize's terminal size.
	Rows int `json:"rows,omitempty"`
	Cols int `json:"cols,omitempty"`
	// Reason and Error say how an ended session ended.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Discovery documents the API for clients and agents (GET /).
type Discovery struct {
	// Service is "lualambda".
	Service string `json:"service"`
	// Routes are the API's routes, with the base path they are served at.
	Routes Routes `json:"routes"`
	// Run says how to send a run.
	Run RunDoc `json:"run"`
	// Profiles are the server's profiles, in its order.
	Profiles []ProfileDoc `json:"profiles"`
	// Limits are the server's limits on a request.
	Limits Limits `json:"limits"`
	// MCP is where the server's MCP endpoint (Model Context Protocol, the
	// same runs as tools for AI agents) is: a URL, or a path on this
	// server. Omitted when the server has none.
	MCP string `json:"mcp,omitempty"`
}

// Routes lists each route as "METHOD path", e.g. "POST /invoke/{id}/{profile}".
// (The fields are in JSON key order, as a map's keys were.)
type Routes struct {
	Attach    string `json:"attach"`
	Discovery string `json:"discovery"`
	Output    string `json:"output"`
	Run       string `json:"run"`
	Session   string `json:"session"`
	Status    string `json:"status"`
}

// RunDoc describes a run request.
type RunDoc struct {
	// ContentTypes are the request bodies a run accepts.
	ContentTypes []string `json:"content_types"`
	// PackageField is the multipart field of each package zip.
	PackageField string `json:"package_field"`
	// SpecField is the multipart field of the JSON spec.
	SpecField string `json:"spec_field"`
	// Spec describes the spec's fields.
	Spec SpecDoc `json:"spec"`
	// Token says how to use the run's token.
	Token string `json:"token"`
	// Streaming is the media type to accept (EventStreamType) for a run
	// that streams its output as it is printed (see ReadEvents).
	Streaming string `json:"streaming"`
}

// SpecDoc describes each field of a run's spec.
type SpecDoc struct {
	Args    string `json:"args"`
	Require string `json:"require"`
	Source  string `json:"source"`
}

// ProfileDoc is one profile in Discovery.
type ProfileDoc struct {
	// Name is the profile's path segment.
	Name string `json:"name"`
	// Price is the price of a run or session in USD (USDC), "" when free.
	Price string `json:"price,omitempty"`
	// MemoryMiB is the memory Lua may use.
	MemoryMiB int `json:"memory_mib"`
	// VCPUs is the VM's CPU count.
	VCPUs int `json:"vcpus"`
	// TimeoutMS is the wall-clock limit of a run, in milliseconds.
	TimeoutMS int64 `json:"timeout_ms"`
	// RetainS is how long the output stays readable, in seconds.
	RetainS int64 `json:"retain_seconds"`
	// OutputBytes caps what a run prints.
	OutputBytes int64 `json:"max_output_bytes"`
	// Runtime is the Lua the profile runs: "luajit" (LuaJIT 2.1, Lua 5.1)
	// or "lua5.4".
	Runtime string `json:"runtime"`
}

// Limits are a server's limits on one request.
// (The fields are in JSON key order, as a map's keys were.)
type Limits struct {
	// MaxPackageFiles caps the entries across a request's packages.
	MaxPackageFiles int64 `json:"max_package_files"`
	// MaxPackages caps the package zips in a request.
	MaxPackages int64 `json:"max_packages"`
	// MaxUnpackedBytes caps the unpacked size of a request's packages.
	MaxUnpackedBytes int64 `json:"max_unpacked_bytes"`
	// MaxUploadBytes caps the request body.
	MaxUploadBytes int64 `json:"max_upload_bytes"`
}
