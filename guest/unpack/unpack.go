// Package unpack validates Lua package zips and unpacks them into a
// directory, refusing anything that could escape it or exhaust the guest.
//
// A package named "blah" is a zip whose modules resolve as blah/<path>.lua. If
// every file in the archive already sits under "blah/", the archive is
// unpacked as it is; otherwise its contents are placed under "blah/", so a zip
// of a directory and a zip of that directory's contents both work.
package unpack

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// namePattern is the shape of a package name (the zip's stem).
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidName reports whether name can name a package.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// Limits bound what a set of packages may unpack to.
type Limits struct {
	// Bytes caps the total unpacked size, counted as bytes are written, so an
	// archive that lies about its sizes is still stopped.
	Bytes int64
	// Files caps the number of entries, directories included.
	Files int
}

// ErrLimit is wrapped by errors caused by a package exceeding its limits.
var ErrLimit = errors.New("package limit exceeded")

// Unpacker unpacks packages into one directory, keeping count across them.
type Unpacker struct {
	dir    string
	limits Limits
	bytes  int64
	files  int
	seen   map[string]string // path inside dir → package that wrote it
}

// New returns an Unpacker writing below dir, which must exist.
func New(dir string, limits Limits) *Unpacker {
	return &Unpacker{dir: dir, limits: limits, seen: map[string]string{}}
}

// Check validates a package zip without writing anything: its name, its
// entries' names, kinds and compression methods, and its declared sizes
// against the limits. It returns the number of entries.
func Check(name string, data []byte, limits Limits) (int, error) {
	_, entries, err := open(name, data)
	if err != nil {
		return 0, err
	}
	if limits.Files > 0 && len(entries) > limits.Files {
		return 0, fmt.Errorf("package %q: %d entries: %w (at most %d)", name, len(entries), ErrLimit, limits.Files)
	}
	var total uint64
	for _, e := range entries {
		total += e.file.UncompressedSize64
		if limits.Bytes > 0 && total > uint64(limits.Bytes) {
			return 0, fmt.Errorf("package %q: unpacks to more than %d bytes: %w", name, limits.Bytes, ErrLimit)
		}
	}
	return len(entries), nil
}

// entry is one validated archive member and where it goes.
type entry struct {
	file *zip.File
	dest string // slash path relative to the unpack directory
}

// open parses an archive and validates every entry, returning where each goes.
func open(name string, data []byte) (*zip.Reader, []entry, error) {
	if !ValidName(name) {
		return nil, nil, fmt.Errorf("package name %q: want 1-64 of A-Z a-z 0-9 _ -", name)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, nil, fmt.Errorf("package %q: not a valid zip: %w", name, err)
	}
	prefixed := true
	for _, f := range zr.File {
		if err := checkEntry(name, f); err != nil {
			return nil, nil, err
		}
		if !f.FileInfo().IsDir() && !strings.HasPrefix(f.Name, name+"/") {
			prefixed = false
		}
	}
	entries := make([]entry, 0, len(zr.File))
	for _, f := range zr.File {
		dest := path.Clean(f.Name)
		if !prefixed {
			dest = name + "/" + dest
		}
		entries = append(entries, entry{file: f, dest: dest})
	}
	return zr, entries, nil
}

// checkEntry refuses entries that are not plain files or directories with
// safe relative names and a supported compression method.
func checkEntry(pkg string, f *zip.File) error {
	n := f.Name
	switch {
	case n == "" || strings.ContainsRune(n, 0) || strings.Contains(n, `\`):
		return fmt.Errorf("package %q: bad entry name %q", pkg, n)
	case strings.HasPrefix(n, "/") || filepath.VolumeName(n) != "":
		return fmt.Errorf("package %q: entry %q: absolute paths are not allowed", pkg, n)
	}
	for _, part := range strings.Split(strings.TrimSuffix(n, "/"), "/") {
		if part == ".." {
			return fmt.Errorf("package %q: entry %q: path traversal is not allowed", pkg, n)
		}
		if part == "" || part == "." {
			return fmt.Errorf("package %q: bad entry name %q", pkg, n)
		}
	}
	mode := f.Mode()
	if mode&fs.ModeSymlink != 0 {
		return fmt.Errorf("package %q: entry %q: links are not allowed", pkg, n)
	}
	if mode&(fs.ModeType&^fs.ModeDir) != 0 {
		return fmt.Errorf("package %q: entry %q: only files and directories are allowed", pkg, n)
	}
	if f.Method != zip.Store && f.Method != zip.Deflate {
		return fmt.Errorf("package %q: entry %q: compression method %d is not supported (use STORED or DEFLATE)", pkg, n, f.Method)
	}
	return nil
}

// Unpack validates one package and writes its entries below the directory.
// Files are written 0644 and directories 0755, whatever the archive says.
func (u *Unpacker) Unpack(name string, data []byte) error {
	_, entries, err := open(name, data)
	if err != nil {
		return err
	}
	for _, e := range entries {
		u.files++
		if u.limits.Files > 0 && u.files > u.limits.Files {
			return fmt.Errorf("package %q: more than %d entries in all: %w", name, u.limits.Files, ErrLimit)
		}
		target := filepath.Join(u.dir, filepath.FromSlash(e.dest))
		if e.file.FileInfo().IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("package %q: %w", name, err)
			}
			continue
		}
		if other, dup := u.seen[e.dest]; dup {
			return fmt.Errorf("package %q: %s is also in package %q", name, e.dest, other)
		}
		u.seen[e.dest] = name
		if err := u.writeFile(name, e, target); err != nil {
			return err
		}
	}
	return nil
}

// writeFile copies one entry to target, counting bytes against the limit.
func (u *Unpacker) writeFile(pkg string, e entry, target string) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("package %q: %w", pkg, err)
	}
	rc, err := e.file.Open()
	if err != nil {
		return fmt.Errorf("package %q: entry %q: %w", pkg, e.file.Name, err)
	}
	defer rc.Close()
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("package %q: %w", pkg, err)
	}
	defer out.Close()
	budget := int64(-1)
	if u.limits.Bytes > 0 {
		budget = u.limits.Bytes - u.bytes
	}
	var src io.Reader = rc
	if budget >= 0 {
		src = io.LimitReader(rc, budget+1)
	}
	n, err := io.Copy(out, src)
	u.bytes += n
	if err != nil {
		return fmt.Errorf("package %q: entry %q: %w", pkg, e.file.Name, err)
	}
	if budget >= 0 && n > budget {
		return fmt.Errorf("package %q: unpacks to more than %d bytes: %w", pkg, u.limits.Bytes, ErrLimit)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("package %q: %w", pkg, err)
	}
	return nil
}

// DeclaredSize sums the uncompressed sizes a zip's directory declares. The
// guest counts the real bytes again while unpacking, since a zip can lie.
func DeclaredSize(data []byte) (int64, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return 0, fmt.Errorf("not a valid zip: %w", err)
	}
	var n uint64
	for _, f := range zr.File {
		n += f.UncompressedSize64
	}
	if n > 1<<62 {
		return 1 << 62, nil
	}
	return int64(n), nil
}
