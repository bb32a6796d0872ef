package caddylualambda

import (
	"encoding/json"

	"github.com/lualambda/caddy-lualambda/x402"
)

// bazaarRun is the x402 v2 "bazaar" extension of a run's payment
// requirements: how to call a run and what it answers, for discovery
// services and agents that catalogue paid endpoints (x402's bazaar
// specification: info, and the JSON Schema that info follows).
var bazaarRun = mustJSON(x402.Bazaar(
	map[string]any{
		"input": map[string]any{
			"type":     "http",
			"method":   "POST",
			"bodyType": "json",
			"body": map[string]any{
				"source": "local name = ... return 'hello, ' .. name",
				"args":   []any{"world"},
			},
		},
		"output": map[string]any{
			"type": "json",
			"example": map[string]any{
				"id": "3f9c2a7e", "profile": "nano", "reason": "ok", "result": "hello, world",
				"stdout": "", "stderr": "", "state": "done", "token": "…",
			},
		},
	},
	map[string]any{
		"type": "object",
		"properties": map[string]any{
			"type":     map[string]any{"type": "string", "const": "http"},
			"method":   map[string]any{"type": "string", "enum": []string{"POST"}},
			"bodyType": map[string]any{"type": "string", "enum": []string{"json", "form-data", "text"}},
			"body": map[string]any{
				"type": "object",
				"properties": map[string]any{
					"source":  map[string]any{"type": "string", "description": "Lua code to run; its return value is the result"},
					"require": map[string]any{"type": "string", "description": "a module of the uploaded packages to run instead of source"},
					"args":    map[string]any{"type": "array", "description": "JSON values passed to the code as ..."},
				},
			},
		},
		"required":             []string{"type", "method", "bodyType", "body"},
		"additionalProperties": false,
	},
))

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
