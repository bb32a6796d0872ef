package caddylualambda

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/lualambda/caddy-lualambda/payhook"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// busyVMs is a pool with no VM to give: every Acquire is refused as a full
// pool is.
type busyVMs struct{ observed int }

func (b *busyVMs) Acquire(context.Context) (guestVM, error) { return nil, vmpool.ErrBusy }
func (b *busyVMs) ObserveJob(string, time.Duration)         { b.observed++ }

// TestNoVMIsFreeAndForgotten: when no VM can be had the run answers 503
// with Retry-After, is not charged, carries no token, and leaves its id
// free to be used again.
func TestNoVMIsFreeAndForgotten(t *testing.T) {
	h := routeTestHandler(t)
	h.MaxPerClient = 4
	h.clients = newClientLimiter(h.MaxPerClient)
	busy := &busyVMs{}
	for _, p := range h.profiles {
		p.vms = busy
	}
	for range 2 {
		ctx, gate := payhook.WithGate(t.Context())
		r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/busy-1/nano", strings.NewReader("return 1"))
		r.Header.Set("Content-Type", "text/x-lua")
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, nil); err != nil {
			t.Fatal(err)
		}
		charge, decided, _ := gate.Decision()
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || charge || !decided ||
			w.Header().Get("X-Lualambda-Token") != "" || strings.Contains(w.Body.String(), "token") {
			t.Fatalf("no VM: %d %v charge=%v %s", w.Code, w.Header(), charge, w.Body.String())
		}
	}
	st := httptest.NewRecorder()
	_ = h.ServeHTTP(st, httptest.NewRequest(http.MethodGet, "/busy-1", nil), nil)
	if st.Code != http.StatusNotFound {
		t.Fatalf("the id of a run that never started: %d %s", st.Code, st.Body.String())
	}
	if busy.observed != 0 {
		t.Fatal("a run that never started was counted as a job")
	}
}

// TestHandlerInCaddyWithoutVMs serves the API from a real Caddy (caddytest)
// whose profiles keep no warm VM, and checks what it answers before any VM
// is needed: discovery, status, refusals, methods and auth.
func TestHandlerInCaddyWithoutVMs(t *testing.T) {
	runtime, err := os.MkdirTemp("", "lualambda-caddytest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runtime) })
	if err := os.Chmod(runtime, 0o711); err != nil { // QEMU's uids pass through it
		t.Fatal(err)
	}
	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(`{
	skip_install_trust
	admin localhost:2999
	http_port 9080
	storage file_system %s
	lualambda {
		accel tcg
		snapshots off
		runtime_dir %s/vms
	}
}
http://localhost:9080 {
	handle_path /invoke/* {
		lualambda {
			profile nano {
				warm 0
				price .5
			}
		}
	}
}`, runtime+"/storage", runtime), "caddyfile")
	base := "http://localhost:9080/invoke"
	check := func(method, path, contentType, reqBody string, status int, contains string, header ...string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(reqBody))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp := tester.AssertResponseCode(req, status)
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		if !strings.Contains(b.String(), contains) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: %s (%s), want %q in JSON", method, path, b.String(), resp.Header.Get("Content-Type"), contains)
		}
	}
	check(http.MethodGet, "/", "", "", http.StatusOK, `"profiles":[{"name":"nano","price":"0.5"`)
	check(http.MethodGet, "/nobody", "", "", http.StatusNotFound, "no invocation")
	check(http.MethodGet, "/bad.id", "", "", http.StatusBadRequest, "bad invocation id")
	check(http.MethodGet, "/nobody/output", "", "", http.StatusNotFound, "no invocation")
	check(http.MethodDelete, "/x/nano", "", "", http.StatusMethodNotAllowed, "not allowed")
	check(http.MethodPost, "/x/huge", "text/x-lua", "return 1", http.StatusNotFound, "no profile")
	check(http.MethodPost, "/x/nano", "image/png", "return 1", http.StatusUnsupportedMediaType, "unsupported")
	check(http.MethodPost, "/x/nano", "text/x-lua", "", http.StatusBadRequest, "nothing to run")
	check(http.MethodPost, "/x/nano", "application/json", `{"bogus": 1}`, http.StatusBadRequest, "bad JSON spec")
	check(http.MethodGet, "/x/attach", "", "", http.StatusNotFound, "no session")
}
