// Package harness holds the Lua program that runs user code inside the
// guest. The image builder installs Source at InstallPath; the agent starts
// `luajit InstallPath` as an unprivileged user before any job exists.
//
// The harness reads one JSON job, a single line, on stdin:
//
//	{"source": "...", "require": "a.b", "args": [...], "pkgdir": "/job/pkg",
//	 "seed": 42, "max_result_bytes": 1048576}
//
// and writes one JSON result to fd 3:
//
//	{"ok": true, "result": <value>}
//	{"ok": false, "reason": "error"|"memory", "error": "...", "traceback": "..."}
//
// stdout and stderr are the user's. The JSON rules for results are in the
// README ("How results become JSON").
package harness

import _ "embed"

// Source is the harness program.
//
//go:embed harness.lua
var Source []byte

// InstallPath is where the image puts the harness in the guest.
const InstallPath = "/lib/lualambda/harness.lua"
