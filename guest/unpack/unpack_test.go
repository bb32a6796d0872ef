package unpack

import (
	"archive/zip"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/lualambda/caddy-lualambda/guest/unpack/ziptest"
)

func makeZip(t testing.TB, method uint16, files ...string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := 0; i+1 < len(files); i += 2 {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: files[i], Method: method})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(files[i+1]))
	}
	zw.Close()
	return buf.Bytes()
}

func TestUnpackLayouts(t *testing.T) {
	dir := t.TempDir()
	u := New(dir, Limits{Bytes: 1 << 20, Files: 10})
	if err := u.Unpack("blah", makeZip(t, zip.Deflate, "blah/init.lua", "return 1", "blah/dorp.lua", "return 2")); err != nil {
		t.Fatal(err)
	}
	if err := u.Unpack("flat", makeZip(t, zip.Store, "init.lua", "return 3")); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"blah/init.lua": "return 1", "blah/dorp.lua": "return 2", "flat/init.lua": "return 3"} {
		b, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", path, b, err)
		}
	}
}

func TestUnpackRefuses(t *testing.T) {
	cases := []struct {
		name, pkg string
		data      []byte
		limits    Limits
		want      string
	}{
		{"bad name", "../x", makeZip(t, zip.Store, "a.lua", "1"), Limits{}, "package name"},
		{"not a zip", "p", []byte("hello"), Limits{}, "not a valid zip"},
		{"traversal", "p", makeZip(t, zip.Store, "p/../../etc/passwd", "x"), Limits{}, "path traversal"},
		{"absolute", "p", makeZip(t, zip.Store, "/etc/passwd", "x"), Limits{}, "absolute"},
		{"backslash", "p", makeZip(t, zip.Store, `p\..\x`, "x"), Limits{}, "bad entry name"},
		{"too many files", "p", makeZip(t, zip.Store, "a", "1", "b", "2", "c", "3"), Limits{Files: 2}, "limit"},
		{"bomb", "p", makeZip(t, zip.Deflate, "p/big", strings.Repeat("a", 1<<20)), Limits{Bytes: 1 << 16}, "limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := New(t.TempDir(), c.limits).Unpack(c.pkg, c.data)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestBombCaughtWhileWriting(t *testing.T) {
	// Declared sizes pass Check when limits are generous, but the real
	// bytes are counted while writing.
	data := makeZip(t, zip.Deflate, "p/big", strings.Repeat("a", 1<<20))
	err := New(t.TempDir(), Limits{Bytes: 1000}).Unpack("p", data)
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("got %v, want ErrLimit", err)
	}
}

func FuzzUnpack(f *testing.F) {
	f.Add(makeZip(f, zip.Store, "p/init.lua", "return 1"))
	f.Add(makeZip(f, zip.Store, "p.lua", "return 1")) // linked as the module p
	f.Add(makeZip(f, zip.Deflate, "../x", "y"))
	f.Add([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		_ = New(dir, Limits{Bytes: 1 << 20, Files: 100}).Unpack("p", data)
		// Whatever happened, nothing may land outside dir.
		parent := filepath.Dir(dir)
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			if e.Name() != filepath.Base(dir) {
				t.Fatalf("wrote %s outside the unpack directory", e.Name())
			}
		}
	})
}

// TestEntryBound: the bound is the declared count (zip64 too) or the
// signature count, whichever is larger, and the zips are ones archive/zip
// reads.
func TestEntryBound(t *testing.T) {
	cases := []struct {
		entries  int
		declared uint64
		want     uint64
	}{
		{3, 3, 3},
		{70_000, 70_000, 70_000},
		{65_536 + 5, 5, 65_541}, // a count that wrapped
		{2, 1_000_000, 1_000_000},
	}
	for _, c := range cases {
		data := ziptest.ManyEntries(c.entries, c.declared)
		if got := EntryBound(data); got != c.want {
			t.Errorf("%d entries declaring %d: bound %d, want %d", c.entries, c.declared, got, c.want)
		}
	}
	for _, c := range cases[:3] {
		zr, err := zip.NewReader(bytes.NewReader(ziptest.ManyEntries(c.entries, c.declared)), int64(len(ziptest.ManyEntries(c.entries, c.declared))))
		if err != nil || len(zr.File) != c.entries {
			t.Fatalf("archive/zip reads %d entries declaring %d: %v", c.entries, c.declared, err)
		}
	}
}

// TestTooManyEntriesRefusedBeforeParsing: Scan and the guest's Unpack
// refuse by count before parsing entries, allocating next to nothing.
func TestTooManyEntriesRefusedBeforeParsing(t *testing.T) {
	data := ziptest.ManyEntries(65_536+5, 5)
	measure := func(f func() error) (uint64, error) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		err := f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc, err
	}
	n, err := measure(func() error { _, err := Scan("big", data, Limits{Files: 4096}); return err })
	if !errors.Is(err, ErrLimit) || n > 1<<20 {
		t.Fatalf("Scan: %v after allocating %d bytes", err, n)
	}
	u := New(t.TempDir(), Limits{Files: 4096})
	n, err = measure(func() error { return u.Unpack("big", data) })
	if !errors.Is(err, ErrLimit) || n > 1<<20 {
		t.Fatalf("Unpack: %v after allocating %d bytes", err, n)
	}
}

// FuzzScan: Scan never panics; what it accepts is within its limits and
// parses the same with archive/zip; and EntryBound is never below the
// number of entries archive/zip finds, which is what makes refusing by it
// safe.
func FuzzScan(f *testing.F) {
	f.Add(makeZip(f, zip.Store, "p/init.lua", "return 1", "p/a/b.lua", "x"))
	f.Add(makeZip(f, zip.Deflate, "init.lua", "return 1"))
	f.Add(ziptest.ManyEntries(3, 3))
	f.Add(ziptest.ManyEntries(20, 4))
	f.Add(ziptest.ManyEntries(2, 70_000))
	f.Add([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	f.Fuzz(func(t *testing.T, data []byte) {
		limits := Limits{Bytes: 1 << 20, Files: 8}
		sum, err := Scan("p", data, limits)
		if zr, zerr := zip.NewReader(bytes.NewReader(data), int64(len(data))); zerr == nil {
			if b := EntryBound(data); b < uint64(len(zr.File)) {
				t.Fatalf("bound %d below the %d entries archive/zip reads", b, len(zr.File))
			}
			if err == nil && sum.Files != len(zr.File) {
				t.Fatalf("Scan counted %d entries, archive/zip %d", sum.Files, len(zr.File))
			}
		} else if err == nil {
			t.Fatalf("Scan accepted what archive/zip refuses: %v", zerr)
		}
		if err != nil {
			return
		}
		if sum.Files > limits.Files || sum.DeclaredBytes > limits.Bytes || sum.DeclaredBytes < 0 {
			t.Fatalf("accepted %+v past the limits %+v", sum, limits)
		}
	})
}
