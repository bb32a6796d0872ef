package caddylualambda

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/payhook"
	"github.com/lualambda/caddy-lualambda/store"
)

// routeTestHandler is a handler with two priced profiles and a real store
// in a temporary directory, and no VM pool: enough for every answer the
// handler gives before it needs a VM.
func routeTestHandler(t *testing.T) *Handler {
	t.Helper()
	return &Handler{
		MaxPackages: 10, MaxUploadBytes: 1 << 20, MaxUnpackedBytes: 1 << 20, MaxPackageFiles: 100, MaxPerClient: 1,
		store:  store.New(&certmagic.FileStorage{Path: t.TempDir()}),
		logger: zap.NewNop(),
		profiles: map[string]*profileRuntime{
			"nano":  {Profile: Profile{Name: "nano", Price: "0.001"}},
			"small": {Profile: Profile{Name: "small", Price: "$.5"}},
		},
		order: []string{"nano", "small"},
	}
}

// routeCases are requests of every shape the API knows and many it does
// not, with the status the handler answers when the request never reaches
// a VM, and the price it quotes.
var routeCases = []struct {
	method, target string
	kind           routeKind
	status         int    // what ServeHTTP answers; for runs and sessions, the refusal of the test body
	price          string // what quote answers
}{
	{"GET", "/", routeDiscovery, http.StatusOK, ""},
	{"HEAD", "/", routeDiscovery, http.StatusOK, ""},
	{"POST", "/", routeMethod, http.StatusMethodNotAllowed, ""},
	{"GET", "/abc", routeStatus, http.StatusNotFound, ""},
	{"HEAD", "/abc/", routeStatus, http.StatusNotFound, ""},
	{"POST", "/abc", routeMethod, http.StatusMethodNotAllowed, ""},
	{"DELETE", "/abc", routeMethod, http.StatusMethodNotAllowed, ""},
	{"GET", "/abc/output", routeOutput, http.StatusNotFound, ""},
	{"POST", "/abc/output", routeMethod, http.StatusMethodNotAllowed, ""},
	{"GET", "/abc/attach", routeAttach, http.StatusNotFound, ""},
	{"POST", "/abc/attach", routeMethod, http.StatusMethodNotAllowed, ""},
	{"POST", "/abc/attach?mode=session", routeMethod, http.StatusMethodNotAllowed, ""},
	{"POST", "/abc/nano", routeRun, http.StatusUnsupportedMediaType, "0.001"},
	{"POST", "/abc/nano/", routeRun, http.StatusUnsupportedMediaType, "0.001"},
	{"POST", "/abc/small", routeRun, http.StatusUnsupportedMediaType, "$.5"},
	{"POST", "/abc/nano?mode=session", routeSession, http.StatusUnsupportedMediaType, "0.001"},
	{"POST", "/abc/nano?mode=other", routeRun, http.StatusUnsupportedMediaType, "0.001"},
	{"POST", "/abc/huge", routeNoProfile, http.StatusNotFound, ""},
	{"POST", "/abc/huge?mode=session", routeNoProfile, http.StatusNotFound, ""},
	{"POST", "/abc/NANO", routeNoProfile, http.StatusNotFound, ""},
	{"GET", "/abc/nano", routeMethod, http.StatusMethodNotAllowed, ""},
	{"PUT", "/abc/nano", routeMethod, http.StatusMethodNotAllowed, ""},
	{"HEAD", "/abc/nano?mode=session", routeMethod, http.StatusMethodNotAllowed, ""},
	{"POST", "/bad.id/nano", routeBadID, http.StatusBadRequest, ""},
	{"GET", "/bad.id", routeBadID, http.StatusBadRequest, ""},
	{"POST", "/" + strings.Repeat("a", 65) + "/nano", routeBadID, http.StatusBadRequest, ""},
	{"POST", "/abc/nano/x", routeNotFound, http.StatusNotFound, ""},
	{"POST", "//abc/nano", routeRun, http.StatusUnsupportedMediaType, "0.001"}, // the path is trimmed of slashes at both ends
	{"POST", "/abc//nano", routeNotFound, http.StatusNotFound, ""},
	{"GET", "/abc/output/x", routeNotFound, http.StatusNotFound, ""},
}

// TestRouteQuoteAgreesWithServe: for every request, the quote is priced
// exactly when ServeHTTP takes the request as a run or a session of a
// known profile (it gets as far as reading the body, which the test makes
// unacceptable so that no VM is needed), and ServeHTTP answers each
// request as the API says.
func TestRouteQuoteAgreesWithServe(t *testing.T) {
	h := routeTestHandler(t)
	for _, c := range routeCases {
		t.Run(c.method+" "+c.target, func(t *testing.T) {
			qctx, q := payhook.WithQuote(t.Context())
			qr := httptest.NewRequestWithContext(qctx, c.method, c.target, nil)
			if err := h.ServeHTTP(httptest.NewRecorder(), qr, nil); err != nil {
				t.Fatalf("quote: %v", err)
			}
			price, answered := q.Price()
			if !answered || price != c.price {
				t.Errorf("quote = %q (answered %v), want %q", price, answered, c.price)
			}

			gctx, gate := payhook.WithGate(t.Context())
			r := httptest.NewRequestWithContext(gctx, c.method, c.target, strings.NewReader("x"))
			r.Header.Set("Content-Type", "application/x-not-lua")
			w := httptest.NewRecorder()
			if err := h.ServeHTTP(w, r, nil); err != nil {
				t.Fatalf("serve: %v", err)
			}
			if w.Code != c.status {
				t.Errorf("status = %d, want %d (%s)", w.Code, c.status, strings.TrimSpace(w.Body.String()))
			}
			_, _, reason := gate.Decision()
			ran := reason == "bad request" // admit took it as a run or session and read its body
			if ran != (c.price != "") {
				t.Errorf("ServeHTTP took it as a run or session: %v (gate: %q); quote %q", ran, reason, c.price)
			}
			if w.Code == http.StatusMethodNotAllowed && w.Header().Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

// TestRouteClassification: Handler.route sorts each request into the route
// ServeHTTP serves it by, and the quote is priced exactly when that route
// is a run or a session (of a profile that exists).
func TestRouteClassification(t *testing.T) {
	h := routeTestHandler(t)
	for _, c := range routeCases {
		r := httptest.NewRequest(c.method, c.target, nil)
		rt := h.route(r)
		if rt.kind != c.kind {
			t.Errorf("%s %s: kind %d, want %d", c.method, c.target, rt.kind, c.kind)
		}
		runs := rt.kind == routeRun || rt.kind == routeSession
		if runs != (c.price != "") {
			t.Errorf("%s %s: runs %v but quoted %q", c.method, c.target, runs, c.price)
		}
		if runs && (rt.profile == nil || rt.profile.Name != rt.profileName || rt.id != "abc") {
			t.Errorf("%s %s: route %+v", c.method, c.target, rt)
		}
		if rt.kind == routeMethod && len(rt.allow) == 0 {
			t.Errorf("%s %s: method not allowed, but no methods are", c.method, c.target)
		}
	}
}
