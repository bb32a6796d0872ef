package mcpserver

import (
	"encoding/json"

	"github.com/lualambda/caddy-lualambda/x402"
)

// bazaarExtensions is the "extensions" object of run_lua's payment
// requirements: x402's bazaar extension for an MCP tool (its name,
// description, input schema and an example call), so that catalogues and
// agents that read the 402 know how to call the tool.
func (h *Handler) bazaarExtensions(paid bool) (json.RawMessage, error) {
	info := map[string]any{
		"input": map[string]any{
			"type":        "mcp",
			"tool":        ToolRunLua,
			"description": h.runDescription(paid),
			"inputSchema": h.runInputSchema(),
			"example":     map[string]any{"code": "local name = ... return 'hello, ' .. name", "args": []any{"world"}},
		},
		"output": map[string]any{
			"type":    "json",
			"example": map[string]any{"reason": "ok", "result": "hello, world", "stdout": "", "stderr": ""},
		},
	}
	input := map[string]any{
		"type": "object",
		"properties": map[string]any{
			"type":        map[string]any{"type": "string", "const": "mcp"},
			"tool":        map[string]any{"type": "string"},
			"description": map[string]any{"type": "string"},
			"inputSchema": map[string]any{"type": "object"},
			"example":     map[string]any{"type": "object"},
		},
		"required": []string{"type", "tool", "inputSchema"},
	}
	return json.Marshal(map[string]any{"bazaar": x402.Bazaar(info, input)})
}
