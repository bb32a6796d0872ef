package e2e

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/internal/testenv"
	"github.com/lualambda/caddy-lualambda/jobspec"
)

// apiSite mounts the handler with one small profile for tests.
const apiSite = `
	handle_path /invoke/* {
		lualambda {
			max_packages 2
			max_upload 1MiB
			acquire_timeout 60s
			profile t {
				memory 64MiB
				timeout 5s
				retention 4s
				output_cap 4KiB
				price 0.001
				warm 1
			}
		}
	}`

// multipartBody builds a run request with packages and a spec.
func multipartBody(t testing.TB, pkgs []jobspec.Package, spec string) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range pkgs {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="package"; filename="%s.zip"`, p.Name))
		h.Set("Content-Type", "application/zip")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p.Data)
	}
	if spec != "" {
		if err := mw.WriteField("spec", spec); err != nil {
			t.Fatal(err)
		}
	}
	mw.Close()
	return mw.FormDataContentType(), &buf
}

func blah(t testing.TB) jobspec.Package {
	p, err := jobspec.LoadPackage(filepath.Join(testenv.Root(), "testdata", "packages", "blah"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAPI(t *testing.T) {
	s := startCaddy(t, serverConfig{site: apiSite})

	t.Run("discovery", func(t *testing.T) {
		r := do(t, http.MethodGet, s.URL+"/invoke/", "", nil)
		if r.status != 200 {
			t.Fatalf("discovery: %d %s", r.status, r.body)
		}
		profiles, _ := r.json["profiles"].([]any)
		routes, _ := r.json["routes"].(map[string]any)
		if len(profiles) != 1 || profiles[0].(map[string]any)["price"] != "0.001" || routes["run"] != "POST /invoke/{id}/{profile}" {
			t.Fatalf("discovery: %s", r.body)
		}
	})

	t.Run("forms", func(t *testing.T) {
		cases := []struct{ id, src, want string }{
			{"f-return", "return 2 + 2", "4"},
			{"f-bare", "2 + 2", "4"},
			{"f-table", `return {hello = "world"}`, `{"hello":"world"}`},
		}
		for _, c := range cases {
			r := runLua(t, s, c.id, "t", c.src)
			res, _ := json.Marshal(r.json["result"])
			if r.status != 200 || r.str("reason") != "ok" || string(res) != c.want {
				t.Errorf("%s: %d %s", c.src, r.status, r.body)
			}
		}
		r := do(t, http.MethodPost, s.URL+"/invoke/f-func/t?arg=Algorand", "text/x-lua",
			strings.NewReader(`return function(args) return "hi " .. args[1] end`))
		if r.status != 200 || r.json["result"] != "hi Algorand" {
			t.Errorf("function form: %d %s", r.status, r.body)
		}
		r = do(t, http.MethodPost, s.URL+"/invoke/f-json/t", "application/json",
			strings.NewReader(`{"source": "return ...", "args": [{"a": 1}]}`))
		if r.status != 200 || fmt.Sprint(r.json["result"]) != "map[a:1]" {
			t.Errorf("JSON spec: %d %s", r.status, r.body)
		}
	})

	t.Run("packages", func(t *testing.T) {
		ct, body := multipartBody(t, []jobspec.Package{blah(t)}, `{"require": "blah.dorp", "args": [{"n": 2}]}`)
		r := do(t, http.MethodPost, s.URL+"/invoke/pkg-1/t", ct, body)
		res, _ := json.Marshal(r.json["result"])
		if r.status != 200 || string(res) != `{"greeting":"hello dorp","squares":[1,4]}` {
			t.Fatalf("require blah.dorp: %d %s", r.status, r.body)
		}
	})

	t.Run("print and errors", func(t *testing.T) {
		r := runLua(t, s, "p-1", "t", `print("hello") error("boom")`)
		if r.status != 200 || r.str("reason") != "error" || r.str("stdout") != "hello\n" ||
			!strings.Contains(r.str("error"), "boom") || r.str("traceback") == "" {
			t.Fatalf("lua error: %d %s", r.status, r.body)
		}
		r = runLua(t, s, "p-2", "t", `for i = 1, 10000 do print(i) end`)
		if r.status != 200 || r.str("reason") != "output_cap" || len(r.str("stdout")) > 4096 {
			t.Fatalf("output cap: %d %.300s", r.status, r.body)
		}
	})

	t.Run("status and output", func(t *testing.T) {
		var wg sync.WaitGroup
		var run response
		wg.Add(1)
		go func() {
			defer wg.Done()
			run = runLua(t, s, "slow-1", "t", `local t0 = os.clock() while os.clock() - t0 < 2 do end return "done"`)
		}()
		deadline := time.Now().Add(20 * time.Second)
		sawRunning := false
		for time.Now().Before(deadline) && !sawRunning {
			r := do(t, http.MethodGet, s.URL+"/invoke/slow-1", "", nil)
			sawRunning = r.status == 200 && r.str("state") == "running"
			time.Sleep(50 * time.Millisecond)
		}
		wg.Wait()
		if !sawRunning {
			t.Fatal("never saw the invocation running")
		}
		st := do(t, http.MethodGet, s.URL+"/invoke/slow-1", "", nil)
		if st.status != 200 || st.str("state") != "done" || st.str("reason") != "ok" {
			t.Fatalf("status after: %d %s", st.status, st.body)
		}
		if bytes.Contains(st.body, []byte(`"done"`)) && bytes.Contains(st.body, []byte("result")) {
			t.Fatalf("status must not reveal results: %s", st.body)
		}
		token := run.str("token")
		if token == "" || run.header.Get("X-Lualambda-Token") != token {
			t.Fatalf("the run must return its token: %s", run.body)
		}
		if r := do(t, http.MethodGet, s.URL+"/invoke/slow-1/output", "", nil); r.status != 401 {
			t.Fatalf("output without token: %d", r.status)
		}
		if r := do(t, http.MethodGet, s.URL+"/invoke/slow-1/output", "", nil, "Authorization", "Bearer wrong"); r.status != 403 {
			t.Fatalf("output with a wrong token: %d", r.status)
		}
		out := do(t, http.MethodGet, s.URL+"/invoke/slow-1/output", "", nil, "Authorization", "Bearer "+token)
		if out.status != 200 || out.json["result"] != "done" {
			t.Fatalf("output: %d %s", out.status, out.body)
		}
		// Retention is 4 s: the output goes once it has passed.
		expires, err := time.Parse(time.RFC3339Nano, out.str("expires_at"))
		if err != nil {
			t.Fatalf("output without expires_at: %s", out.body)
		}
		for r := out; r.status != 410; {
			if time.Now().After(expires.Add(30 * time.Second)) {
				t.Fatalf("output long after retention: %d %s", r.status, r.body)
			}
			if r.status != 200 {
				t.Fatalf("output before it expired: %d %s", r.status, r.body)
			}
			time.Sleep(100 * time.Millisecond)
			r = do(t, http.MethodGet, s.URL+"/invoke/slow-1/output", "", nil, "Authorization", "Bearer "+token)
		}
		if !time.Now().After(expires) {
			t.Fatalf("the output went before its expiry %s", expires)
		}
		if r := do(t, http.MethodGet, s.URL+"/invoke/slow-1", "", nil); r.str("state") != "expired" {
			t.Fatalf("status after retention: %s", r.body)
		}
	})

	t.Run("one run per id", func(t *testing.T) {
		var wg sync.WaitGroup
		codes := make([]int, 2)
		for i := range codes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i] = runLua(t, s, "twice", "t", "return 1").status
			}()
		}
		wg.Wait()
		if !(codes[0] == 200 && codes[1] == 409 || codes[0] == 409 && codes[1] == 200) {
			t.Fatalf("two concurrent POSTs for one id: %v, want one 200 and one 409", codes)
		}
		if r := runLua(t, s, "twice", "t", "return 1"); r.status != 409 || r.json["status"] == nil {
			t.Fatalf("a later POST: %d %s", r.status, r.body)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		badZip := []jobspec.Package{{Name: "bad", Data: []byte("not a zip")}}
		ct, body := multipartBody(t, badZip, `{"require": "bad"}`)
		var trav bytes.Buffer
		zw := zip.NewWriter(&trav)
		w, _ := zw.Create("../../etc/x.lua")
		w.Write([]byte("return 1"))
		zw.Close()
		ctT, bodyT := multipartBody(t, []jobspec.Package{{Name: "trav", Data: trav.Bytes()}}, `{"require": "trav"}`)
		three := []jobspec.Package{blah(t), {Name: "b2", Data: blah(t).Data}, {Name: "b3", Data: blah(t).Data}}
		ct3, body3 := multipartBody(t, three, `{"require": "blah"}`)
		ctS, bodyS := multipartBody(t, []jobspec.Package{blah(t)}, `{"require": `)
		ctM, bodyM := multipartBody(t, []jobspec.Package{blah(t)}, `{"require": "nothere.x"}`)
		cases := []struct {
			name        string
			method, url string
			ct          string
			body        *bytes.Buffer
			status      int
			contains    string
		}{
			{"bad id", "GET", "/invoke/bad%20id", "", nil, 400, "bad invocation id"},
			{"long id", "GET", "/invoke/" + strings.Repeat("a", 65), "", nil, 400, "bad invocation id"},
			{"unknown id", "GET", "/invoke/nobody-ran-this", "", nil, 404, "no invocation"},
			{"unknown profile", "POST", "/invoke/x1/huge", "text/x-lua", bytes.NewBufferString("return 1"), 404, "no profile"},
			{"wrong method", "DELETE", "/invoke/x1/t", "", nil, 405, "not allowed"},
			{"wrong method on output", "POST", "/invoke/x1/output", "", nil, 405, "not allowed"},
			{"no content type", "POST", "/invoke/x2/t", "", bytes.NewBufferString("return 1"), 415, "Content-Type"},
			{"bad content type", "POST", "/invoke/x3/t", "image/png", bytes.NewBufferString("return 1"), 415, "unsupported"},
			{"bad zip", "POST", "/invoke/x4/t", ct, body, 400, "not a valid zip"},
			{"traversal", "POST", "/invoke/x5/t", ctT, bodyT, 400, "path traversal"},
			{"too many packages", "POST", "/invoke/x6/t", ct3, body3, 413, "too many packages"},
			{"bad spec", "POST", "/invoke/x7/t", ctS, bodyS, 400, "bad spec"},
			{"module in no package", "POST", "/invoke/x8/t", ctM, bodyM, 400, "no package named nothere.zip"},
			{"too large", "POST", "/invoke/x9/t", "text/x-lua", bytes.NewBuffer(bytes.Repeat([]byte("-"), 2<<20)), 413, "larger than"},
			{"empty", "POST", "/invoke/x10/t", "text/x-lua", bytes.NewBuffer(nil), 400, "nothing to run"},
			{"bad args", "POST", "/invoke/x11/t?args=notjson", "text/x-lua", bytes.NewBufferString("return 1"), 400, "JSON array"},
			{"unknown route", "GET", "/invoke/a/b/c", "", nil, 404, "not found"},
		}
		for _, c := range cases {
			var rd *bytes.Buffer = c.body
			if rd == nil {
				rd = &bytes.Buffer{}
			}
			r := do(t, c.method, s.URL+c.url, c.ct, rd)
			if r.status != c.status || !strings.Contains(r.str("error"), c.contains) {
				t.Errorf("%s: got %d %s, want %d with %q", c.name, r.status, r.body, c.status, c.contains)
			}
		}
		// A rejected request does not burn its id.
		if r := runLua(t, s, "x4", "t", "return 'ok'"); r.status != 200 {
			t.Errorf("id of a rejected request: %d %s", r.status, r.body)
		}
	})
}

func TestRestartKeepsOutputs(t *testing.T) {
	storage := filepath.Join(t.TempDir(), "storage")
	port := freePort(t)
	s := startCaddy(t, serverConfig{storage: storage, site: apiSite, port: port})
	run := runLua(t, s, "persist", "t", `return {kept = true}`)
	if run.status != 200 {
		t.Fatalf("run: %d %s", run.status, run.body)
	}
	s.stop()
	s.start()
	out := do(t, http.MethodGet, s.URL+"/invoke/persist/output", "", nil, "Authorization", "Bearer "+run.str("token"))
	if out.status != 200 || fmt.Sprint(out.json["result"]) != "map[kept:true]" {
		t.Fatalf("output after a restart: %d %s", out.status, out.body)
	}
	if r := runLua(t, s, "persist", "t", "return 2"); r.status != 409 {
		t.Fatalf("the id must stay used after a restart: %d", r.status)
	}
	if entries, _ := os.ReadDir(filepath.Join(storage, "lualambda", "blobs")); entries != nil {
		t.Logf("%d blobs stored", len(entries))
	}
}

func TestPoolFullIs503(t *testing.T) {
	admin := freePort(t)
	s := startCaddy(t, serverConfig{global: "max_vms 1", admin: admin, site: `
	handle_path /invoke/* {
		lualambda {
			acquire_timeout 3s
			max_per_client 2
			profile t {
				memory 64MiB
				timeout 10s
				warm 1
			}
		}
	}`})
	// Wait for the pool's one VM, then let a long run take it.
	waitPool(t, admin, "t", func(p poolStats) bool { return p.Ready == 1 })
	done := make(chan response, 1)
	go func() {
		done <- runLua(t, s, "hold", "t", `local t0 = os.clock() while os.clock() - t0 < 6 do end return 1`)
	}()
	waitPool(t, admin, "t", func(p poolStats) bool { return p.Ready == 0 && p.Live == 1 })
	r := runLua(t, s, "second", "t", "return 2")
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("with every VM busy: %d %s (Retry-After %q)", r.status, r.body, r.header.Get("Retry-After"))
	}
	if first := <-done; first.status != 200 {
		t.Fatalf("the first run: %d %s", first.status, first.body)
	}
	// The refused id was not burned: it runs once a VM is free.
	if r := runLua(t, s, "second", "t", "return 2"); r.status != 200 {
		t.Fatalf("retry after 503: %d %s", r.status, r.body)
	}
}

// TestRefusedRequestsStoreNothing sends packages with requests that are
// refused (a used id): nothing of theirs may stay in storage, so that
// refused requests cannot fill the disk without paying.
func TestRefusedRequestsStoreNothing(t *testing.T) {
	storage := t.TempDir()
	s := startCaddy(t, serverConfig{storage: storage, site: `
	handle_path /invoke/* {
		lualambda {
			profile t {
				memory 64MiB
				timeout 10s
				warm 1
			}
		}
	}`})
	if r := runLua(t, s, "taken", "t", "return 1"); r.status != 200 {
		t.Fatalf("run: %d %s", r.status, r.body)
	}
	for i := range 5 {
		big := jobspec.Package{Name: "big", Data: zipOf(t, map[string]string{"big/init.lua": fmt.Sprintf("return %d -- %s", i, strings.Repeat("x", 200<<10))})}
		ct, body := multipartBody(t, []jobspec.Package{big}, `{"require": "big"}`)
		if r := do(t, http.MethodPost, s.URL+"/invoke/taken/t", ct, body); r.status != 409 {
			t.Fatalf("a used id: %d %s", r.status, r.body)
		}
	}
	var stored []string
	_ = filepath.WalkDir(filepath.Join(storage, "lualambda"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.Contains(p, "/blobs/") || strings.Contains(p, "/blobrefs/")) {
			stored = append(stored, p)
		}
		return nil
	})
	if len(stored) != 0 {
		t.Fatalf("refused requests left %d package files in storage: %v", len(stored), stored)
	}
}

// zipOf builds a zip of the given files.
func zipOf(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, content := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(w, content)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestOneClientCannotTakeEveryVM lets one client hold its share of the
// VMs: its next run is refused with 429, while another client (another
// loopback address) is still served.
func TestOneClientCannotTakeEveryVM(t *testing.T) {
	admin := freePort(t)
	s := startCaddy(t, serverConfig{global: "max_vms 2", admin: admin, site: `
	handle_path /invoke/* {
		lualambda {
			acquire_timeout 20s
			max_per_client 1
			profile t {
				memory 64MiB
				timeout 20s
				warm 2
			}
		}
	}`})
	waitPool(t, admin, "t", func(p poolStats) bool { return p.Ready == 2 })
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
		return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 2 * time.Minute}
	}
	post := func(c *http.Client, id, src string) (int, string) {
		resp, err := c.Post(s.URL+"/invoke/"+id+"/t", "text/x-lua", strings.NewReader(src))
		if err != nil {
			t.Errorf("post %s: %v", id, err)
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	a, b := from("127.0.0.1"), from("127.0.0.2")
	held := make(chan int, 1)
	go func() {
		code, _ := post(a, "a-hold", `local t0 = os.clock() while os.clock() - t0 < 4 do end return 1`)
		held <- code
	}()
	waitPool(t, admin, "t", func(p poolStats) bool { return p.Ready <= 1 })
	if code, body := post(a, "a-more", "return 2"); code != http.StatusTooManyRequests || !strings.Contains(body, "max_per_client") {
		t.Fatalf("the same client over its share: %d %s", code, body)
	}
	if code, body := post(b, "b-run", "return 3"); code != 200 || !strings.Contains(body, `"result":3`) {
		t.Fatalf("another client while the first holds its share: %d %s", code, body)
	}
	if code := <-held; code != 200 {
		t.Fatalf("the held run: %d", code)
	}
	// The refused id was not used: it runs once the client has a slot.
	if code, body := post(a, "a-more", "return 2"); code != 200 {
		t.Fatalf("after the first run ended: %d %s", code, body)
	}
}
