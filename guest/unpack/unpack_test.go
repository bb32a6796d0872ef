package unpack

import (
	"archive/zip"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
