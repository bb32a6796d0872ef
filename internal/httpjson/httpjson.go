// Package httpjson writes the JSON answers this project's Caddy handlers
// give: a document, or {"error": "..."} with a status.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write writes v as the JSON response body with status. Answers are never
// cached, and HTML characters are left as they are.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// Error writes {"error": msg} with status.
func Error(w http.ResponseWriter, status int, msg string) {
	Write(w, status, map[string]string{"error": msg})
}
