package caddylualambda

import (
	"bytes"
	"errors"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/lualambda/caddy-lualambda/guest/unpack"
	"github.com/lualambda/caddy-lualambda/guest/unpack/ziptest"
	"github.com/lualambda/caddy-lualambda/jobspec"
)

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestZipEntryCountRefusedBeforeParsing: a zip that holds far more entries
// than the limit is refused with 413 before its central directory is
// parsed, whether its end record states the count (zip64 too) or hides it
// (a 16-bit count that wrapped, which archive/zip accepts).
func TestZipEntryCountRefusedBeforeParsing(t *testing.T) {
	const limit = 4096
	cases := []struct {
		name     string
		entries  int
		declared uint64
	}{
		{"zip64 count", 200_000, 200_000},
		{"16-bit count", 60_000, 60_000},
		{"count that wrapped", 65_536 + 5, 5},
	}
	lim := requestLimits{maxBody: 64 << 20, maxPackages: 4, unpackLimits: unpack.Limits{Bytes: 64 << 20, Files: limit}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := ziptest.ManyEntries(c.entries, c.declared)
			var err error
			n := allocated(func() {
				req := &runRequest{Require: "big", Packages: []jobspec.Package{{Name: "big", Data: data}}}
				err = validateRun(req, lim)
			})
			var re *requestError
			if !errors.As(err, &re) || re.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("got %v, want a 413", err)
			}
			// Parsing the directory costs hundreds of bytes per entry;
			// refusing by count costs next to nothing.
			if n > 1<<20 {
				t.Fatalf("refusing %d entries allocated %d bytes", c.entries, n)
			}

			// The whole request, as a client sends it.
			var body bytes.Buffer
			mw := multipart.NewWriter(&body)
			w, _ := mw.CreateFormFile("package", "big.zip")
			w.Write(data)
			mw.WriteField("spec", `{"require":"big"}`)
			mw.Close()
			r := httptest.NewRequest(http.MethodPost, "/id/profile", &body)
			r.Header.Set("Content-Type", mw.FormDataContentType())
			_, err = parseRunRequest(r, lim)
			if !errors.As(err, &re) || re.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("whole request: got %v, want a 413", err)
			}
		})
	}
}

// TestZipWithinLimits: packages under the limits pass, and entries and
// declared bytes count across packages.
func TestZipWithinLimits(t *testing.T) {
	lim := requestLimits{maxBody: 64 << 20, maxPackages: 4, unpackLimits: unpack.Limits{Bytes: 64 << 20, Files: 100}}
	req := &runRequest{Require: "a", Packages: []jobspec.Package{
		{Name: "a", Data: ziptest.ManyEntries(60, 60)},
		{Name: "b", Data: ziptest.ManyEntries(40, 40)},
	}}
	if err := validateRun(req, lim); err != nil {
		t.Fatalf("100 entries in all: %v", err)
	}
	req.Packages = append(req.Packages, jobspec.Package{Name: "c", Data: ziptest.ManyEntries(1, 1)})
	var re *requestError
	if err := validateRun(req, lim); !errors.As(err, &re) || re.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("101 entries in all: got %v, want a 413", err)
	}
	big, err := jobspec.LoadPackage("testdata/packages/blah")
	if err != nil {
		t.Fatal(err)
	}
	lim.unpackLimits.Bytes = 10
	req = &runRequest{Require: "blah", Packages: []jobspec.Package{big}}
	if err := validateRun(req, lim); !errors.As(err, &re) || re.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("declared bytes over the limit: got %v, want a 413", err)
	}
}
