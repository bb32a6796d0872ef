// Package jobspec turns what a user gives the CLI (Lua files, package
// directories or zips, argument strings) into a job: package zips built the
// same way every time, JSON arguments, and the default invocation id.
package jobspec

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/unpack"
)

// Package is one named package zip.
type Package struct {
	// Name is the zip's stem, which is also the top-level module name.
	Name string
	Data []byte
}

// Hash is the SHA-256 of the zip's bytes, in hex.
func (p Package) Hash() string {
	sum := sha256.Sum256(p.Data)
	return hex.EncodeToString(sum[:])
}

// skipped names are left out when zipping a directory.
var skipped = map[string]bool{".git": true, "node_modules": true, ".DS_Store": true, ".hg": true, ".svn": true}

// zipEpoch is the timestamp of every zipped entry, so zips are reproducible.
var zipEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// LoadPackage reads a package from a directory (zipped with its base name
// as the top-level directory) or a .zip file (used as it is).
func LoadPackage(path string) (Package, error) {
	info, err := os.Stat(path)
	if err != nil {
		return Package{}, fmt.Errorf("package %s: %w", path, err)
	}
	if info.IsDir() {
		abs, err := filepath.Abs(path)
		if err != nil {
			return Package{}, fmt.Errorf("package %s: %w", path, err)
		}
		name := filepath.Base(abs)
		if !unpack.ValidName(name) {
			return Package{}, fmt.Errorf("package directory %q: its name must be 1-64 of A-Z a-z 0-9 _ -", name)
		}
		data, err := ZipDir(abs, name)
		if err != nil {
			return Package{}, err
		}
		return Package{Name: name, Data: data}, nil
	}
	name, ok := strings.CutSuffix(filepath.Base(path), ".zip")
	if !ok || !unpack.ValidName(name) {
		return Package{}, fmt.Errorf("package %s: want a directory or NAME.zip with NAME of 1-64 A-Z a-z 0-9 _ -", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Package{}, fmt.Errorf("package %s: %w", path, err)
	}
	if _, err := unpack.Check(name, data, unpack.Limits{}); err != nil {
		return Package{}, err
	}
	return Package{Name: name, Data: data}, nil
}

// ZipDir zips the files below dir, each entry under prefix/, sorted and
// dated 1980-01-01 so the same tree always gives the same bytes. Symbolic
// links and special files are refused; VCS and editor clutter is skipped.
func ZipDir(dir, prefix string) ([]byte, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if skipped[d.Name()] && p != dir {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: only regular files can be packaged", p)
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("zip %s: %w", dir, err)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, p := range paths {
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return nil, fmt.Errorf("zip %s: %w", dir, err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("zip %s: %w", dir, err)
		}
		h := &zip.FileHeader{Name: prefix + "/" + filepath.ToSlash(rel), Method: zip.Deflate, Modified: zipEpoch}
		h.SetMode(0o644)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, fmt.Errorf("zip %s: %w", dir, err)
		}
		if _, err := w.Write(data); err != nil {
			return nil, fmt.Errorf("zip %s: %w", dir, err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("zip %s: %w", dir, err)
	}
	return buf.Bytes(), nil
}

// ParseArg turns a command-line argument into a JSON value: the text itself
// when it is valid JSON, else the text as a JSON string.
func ParseArg(s string) json.RawMessage {
	t := strings.TrimSpace(s)
	if t != "" && json.Valid([]byte(t)) {
		return json.RawMessage(t)
	}
	b, _ := json.Marshal(s)
	return b
}

// idPattern is the shape of an invocation id.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidID reports whether id can name an invocation.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// modulePattern is a dotted Lua module name.
var modulePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// ValidModule reports whether name is a dotted Lua module name of at most
// 128 characters.
func ValidModule(name string) bool { return len(name) <= 128 && modulePattern.MatchString(name) }
