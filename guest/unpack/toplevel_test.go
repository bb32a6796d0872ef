package unpack

import (
	"archive/zip"
	"os"
	"path/filepath"
	"testing"
)

// TestTopModuleLinked: a package "hello" holding hello.lua and no init.lua
// is also the module hello (dir/hello.lua, where require looks), whether
// the zip holds the directory or its contents; a package with an init.lua,
// or whose top holds no name.lua, gets no link.
func TestTopModuleLinked(t *testing.T) {
	dir := t.TempDir()
	u := New(dir, Limits{Bytes: 1 << 20, Files: 20})
	for name, data := range map[string][]byte{
		"hello":  makeZip(t, zip.Store, "hello.lua", "return 'hi'", "util.lua", "return 1"),
		"prefix": makeZip(t, zip.Deflate, "prefix/prefix.lua", "return 'p'"),
		"both":   makeZip(t, zip.Store, "init.lua", "return 'init'", "both.lua", "return 'both'"),
		"blah":   makeZip(t, zip.Store, "dorp.lua", "return 2"),
	} {
		if err := u.Unpack(name, data); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for path, want := range map[string]string{"hello.lua": "return 'hi'", "hello/hello.lua": "return 'hi'", "prefix.lua": "return 'p'"} {
		b, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", path, b, err, want)
		}
	}
	for _, path := range []string{"both.lua", "blah.lua", "util.lua"} {
		if _, err := os.Lstat(filepath.Join(dir, path)); !os.IsNotExist(err) {
			t.Errorf("%s exists (%v): only a package's own name.lua, without init.lua, is linked", path, err)
		}
	}
}

// TestTopModuleLinkSpoofRefused: a zip cannot place name.lua beside the
// packages itself: it lands inside its package like every entry.
func TestTopModuleLinkSpoofRefused(t *testing.T) {
	dir := t.TempDir()
	u := New(dir, Limits{Bytes: 1 << 20, Files: 20})
	if err := u.Unpack("evil", makeZip(t, zip.Store, "other.lua", "return 'x'")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "other.lua")); !os.IsNotExist(err) {
		t.Fatalf("other.lua beside the packages: %v", err)
	}
}
