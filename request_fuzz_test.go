package caddylualambda

import (
	"bytes"
	"errors"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/lualambda/caddy-lualambda/guest/unpack"
)

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
		for _, p := range req.Packages {
			if _, err := unpack.Check(p.Name, p.Data, unpack.Limits{}); err != nil {
				t.Fatalf("accepted a bad package: %v", err)
			}
		}
	})
}
