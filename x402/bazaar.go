package x402

// Bazaar returns the value of x402 v2's "bazaar" extension: info (how to
// call the resource and what it answers) and the JSON Schema info follows,
// made of inputSchema (the schema of info.input) and the extension's
// standard schema of info.output.
func Bazaar(info, inputSchema map[string]any) map[string]any {
	return map[string]any{
		"info": info,
		"schema": map[string]any{
			"$schema": "https://json-schema.org/draft/2020-12/schema",
			"type":    "object",
			"properties": map[string]any{
				"input": inputSchema,
				"output": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"type":    map[string]any{"type": "string"},
						"example": map[string]any{"type": "object"},
					},
					"required": []string{"type"},
				},
			},
			"required": []string{"input"},
		},
	}
}
