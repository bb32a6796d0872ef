package caddylualambda

import (
	"archive/zip"
	"bytes"
	"errors"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/lualambda/caddy-lualambda/guest/unpack"
	"github.com/lualambda/caddy-lualambda/guest/unpack/ziptest"
	"github.com/lualambda/caddy-lualambda/jobspec"
)

// zipOf builds a zip of name, content pairs.
func zipOf(tb testing.TB, files ...string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := 0; i+1 < len(files); i += 2 {
		w, err := zw.Create(files[i])
		if err != nil {
			tb.Fatal(err)
		}
		w.Write([]byte(files[i+1]))
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzParseRunRequest feeds arbitrary bodies and content types to the run
// request parser: it must never panic, and every rejection must be a
// client error with a 4xx status.
func FuzzParseRunRequest(f *testing.F) {
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	w, _ := mw.CreateFormFile("package", "blah.zip")
	w.Write([]byte("PK\x03\x04not really a zip"))
	mw.WriteField("spec", `{"require":"blah","args":[1,"two",{"x":null}]}`)
	mw.Close()
	f.Add(mw.FormDataContentType(), mp.Bytes())
	// Real zips: a package with modules, one of many entries, a zip64 one.
	for _, pkgs := range [][]jobspec.Package{
		{{Name: "blah", Data: zipOf(f, "blah/init.lua", "return 1", "blah/dorp.lua", "return 2")}},
		{{Name: "blah", Data: zipOf(f, "init.lua", "return 1")}, {Name: "b2", Data: ziptest.ManyEntries(70, 70)}},
		{{Name: "blah", Data: ziptest.ManyEntries(3, 70_000)}},
	} {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		for _, p := range pkgs {
			w, _ := mw.CreateFormFile("package", p.Name+".zip")
			w.Write(p.Data)
		}
		mw.WriteField("spec", `{"require":"blah.dorp","args":[1]}`)
		mw.Close()
		f.Add(mw.FormDataContentType(), body.Bytes())
	}
	f.Add("text/x-lua", []byte("return 2 + 2"))
	f.Add("application/json", []byte(`{"source":"return 1","args":[]}`))
	f.Add("application/json", []byte(`{"require":"../x"}`))
	f.Add("multipart/form-data; boundary=x", []byte("--x\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{\"require\":\r\n--x--"))
	f.Add("multipart/form-data", []byte("no boundary"))
	f.Add("image/png", []byte{0x89, 'P', 'N', 'G'})
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/id/profile?args=[1]", bytes.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		req, err := parseRunRequest(r, requestLimits{maxBody: 1 << 20, maxPackages: 4, unpackLimits: unpack.Limits{Bytes: 1 << 20, Files: 64}})
		if err != nil {
			var re *requestError
			if !errors.As(err, &re) || re.status < 400 || re.status > 499 {
				t.Fatalf("rejection %v is not a client error", err)
			}
			return
		}
		if req.Source == "" && req.Require == "" {
			t.Fatal("accepted a request with nothing to run")
		}
		files, declared := 0, int64(0)
		for _, p := range req.Packages {
			sum, err := unpack.Scan(p.Name, p.Data, unpack.Limits{})
			if err != nil {
				t.Fatalf("accepted a bad package: %v", err)
			}
			files += sum.Files
			declared += sum.DeclaredBytes
		}
		if files > 64 || declared > 1<<20 {
			t.Fatalf("accepted packages of %d entries and %d bytes past the limits", files, declared)
		}
	})
}
