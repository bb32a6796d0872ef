package facilitator

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/lualambda/caddy-lualambda/x402"
)

// maxRequestSize bounds a /verify or /settle request body.
const maxRequestSize = 256 << 10

// Handler serves a Facilitator in the standard facilitator HTTP API:
// POST .../verify and POST .../settle take {x402Version, paymentPayload,
// paymentRequirements}; GET .../supported lists the kinds. The endpoint is
// chosen by the last path segment, so the handler can be mounted under any
// prefix. Malformed requests get 400 {"error"}, facilitator failures 500
// {"error"}; rejected payments are 200 answers with isValid or success
// false. With a Token, every request must carry it as
// "Authorization: Bearer <token>"; any other gets 401 {"error"}.
type Handler struct {
	// Facilitator answers the requests.
	Facilitator Facilitator
	// Token, when not empty, is the bearer token every request must carry.
	// It is compared in constant time.
	Token string
}

// NewHandler returns a Handler for f that asks for no credential.
func NewHandler(f Facilitator) *Handler { return &Handler{Facilitator: f} }

// authorized reports whether r carries the handler's bearer token (always
// true without one). The scheme name is case-insensitive; the comparison
// takes the same time whatever the token sent.
func (h *Handler) authorized(r *http.Request) bool {
	if h.Token == "" {
		return true
	}
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(cred)))
	want := sha256.Sum256([]byte(h.Token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="x402 facilitator"`)
		writeJSON(w, http.StatusUnauthorized, errorBody("this facilitator needs a bearer token: send Authorization: Bearer <token>"))
		return
	}
	endpoint := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	switch endpoint {
	case "supported":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET")
			return
		}
		s, err := h.Facilitator.Supported(r.Context())
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, errorBody(err.Error()))
			return
		}
		writeJSON(w, http.StatusOK, s)
	case "verify", "settle":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		p, req, err := readRequest(w, r)
		if err != nil {
			status := http.StatusBadRequest
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				status = http.StatusRequestEntityTooLarge
			}
			writeJSON(w, status, errorBody(err.Error()))
			return
		}
		var answer any
		if endpoint == "verify" {
			answer, err = h.Facilitator.Verify(r.Context(), p, req)
		} else {
			answer, err = h.Facilitator.Settle(r.Context(), p, req)
		}
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, errorBody(err.Error()))
			return
		}
		writeJSON(w, http.StatusOK, answer)
	default:
		writeJSON(w, http.StatusNotFound, errorBody("unknown facilitator endpoint"))
	}
}

func readRequest(w http.ResponseWriter, r *http.Request) (x402.Payment, x402.Requirement, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestSize))
	if err != nil {
		return x402.Payment{}, x402.Requirement{}, err
	}
	var fr x402.FacilitatorRequest
	if err := json.Unmarshal(data, &fr); err != nil {
		return x402.Payment{}, x402.Requirement{}, err
	}
	return fr.Decode()
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeJSON(w, http.StatusMethodNotAllowed, errorBody("method not allowed"))
}

func errorBody(msg string) map[string]string { return map[string]string{"error": msg} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":"encode answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}
