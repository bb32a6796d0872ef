package caddylualambda

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/lualambda/caddy-lualambda/guest/unpack"
	"github.com/lualambda/caddy-lualambda/jobspec"
)

// manyEntryZip builds a zip of n empty STORED files. declared is the entry
// count its end-of-central-directory record states (n normally; less to
// lie); a count that does not fit 16 bits goes in a zip64 record.
func manyEntryZip(n int, declared uint64) []byte {
	var b bytes.Buffer
	le := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	offsets := make([]uint32, n)
	name := func(i int) string { return fmt.Sprintf("m%07d.lua", i) }
	for i := 0; i < n; i++ {
		offsets[i] = uint32(b.Len())
		nm := name(i)
		le(uint32(0x04034b50))
		le([]uint16{20, 0, 0, 0, 0x21}) // version, flags, STORED, time, date
		le([]uint32{0, 0, 0})           // crc, sizes
		le([]uint16{uint16(len(nm)), 0})
		b.WriteString(nm)
	}
	cdStart := b.Len()
	for i := 0; i < n; i++ {
		nm := name(i)
		le(uint32(0x02014b50))
		le([]uint16{20, 20, 0, 0, 0, 0x21})
		le([]uint32{0, 0, 0})
		le([]uint16{uint16(len(nm)), 0, 0, 0, 0})
		le([]uint32{0, offsets[i]})
		b.WriteString(nm)
	}
	cdSize := b.Len() - cdStart
	count16 := uint16(declared)
	if declared >= 0xffff {
		eocd64 := b.Len()
		le(uint32(0x06064b50))
		le(uint64(44))
		le([]uint16{45, 45})
		le([]uint32{0, 0})
		le([]uint64{declared, declared, uint64(cdSize), uint64(cdStart)})
		le(uint32(0x07064b50))
		le(uint32(0))
		le(uint64(eocd64))
		le(uint32(1))
		count16 = 0xffff
	}
	le(uint32(0x06054b50))
	le([]uint16{0, 0, count16, count16})
	le([]uint32{uint32(cdSize), uint32(cdStart)})
	le(uint16(0))
	return b.Bytes()
}

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
			data := manyEntryZip(c.entries, c.declared)
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
		{Name: "a", Data: manyEntryZip(60, 60)},
		{Name: "b", Data: manyEntryZip(40, 40)},
	}}
	if err := validateRun(req, lim); err != nil {
		t.Fatalf("100 entries in all: %v", err)
	}
	req.Packages = append(req.Packages, jobspec.Package{Name: "c", Data: manyEntryZip(1, 1)})
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
