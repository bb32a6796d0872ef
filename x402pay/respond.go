package x402pay

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"

	"github.com/lualambda/caddy-lualambda/internal/httpjson"
)

// State shared across config reloads, one pool per kind of value, so that
// an unchanged facilitator keeps its locks and settled payments, and one
// payment buys one answer across a reload too.
var (
	// builtins holds the built-in facilitators, by a hash of their settings.
	builtins = caddy.NewUsagePool()
	// paymentRecords holds the process's record of payments in flight and
	// spent.
	paymentRecords = caddy.NewUsagePool()
)

// writeJSON writes v as the JSON response body.
func writeJSON(w http.ResponseWriter, status int, v any) { httpjson.Write(w, status, v) }

// writeError writes {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) { httpjson.Error(w, status, msg) }
