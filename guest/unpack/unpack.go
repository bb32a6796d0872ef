// Package unpack validates Lua package zips and unpacks them into a
// directory, refusing anything that could escape it or exhaust the guest.
//
// A package named "blah" is a zip whose modules resolve as blah/<path>.lua. If
// every file in the archive already sits under "blah/", the archive is
// unpacked as it is; otherwise its contents are placed under "blah/", so a zip
// of a directory and a zip of that directory's contents both work.
//
// The module "blah" is blah/init.lua, or, when the package has no init.lua,
// blah/blah.lua at the package's top: Unpack then also links blah/blah.lua
// as blah.lua in the directory, where require("blah") finds it.
package unpack

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
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

// Summary is what Scan learns about a package zip.
type Summary struct {
	// Files counts the entries, directories included.
	Files int
	// DeclaredBytes sums the uncompressed sizes the central directory
	// declares. The guest counts the real bytes again while unpacking,
	// since a zip can lie.
	DeclaredBytes int64
}

// Scan validates a package zip without writing anything: its name, its
// entries' names, kinds and compression methods, and its entry count and
// declared sizes against the limits. The entry count is checked before any
// entry is parsed (see EntryBound), so a zip of a million tiny entries
// costs next to nothing to refuse. Limit errors wrap ErrLimit.
func Scan(name string, data []byte, limits Limits) (Summary, error) {
	_, entries, err := open(name, data, limits.Files)
	if err != nil {
		return Summary{}, err
	}
	var total uint64
	for _, e := range entries {
		total += e.file.UncompressedSize64
		if limits.Bytes > 0 && total > uint64(limits.Bytes) {
			return Summary{}, fmt.Errorf("package %q: unpacks to more than %d bytes: %w", name, limits.Bytes, ErrLimit)
		}
	}
	if total > 1<<62 {
		total = 1 << 62
	}
	return Summary{Files: len(entries), DeclaredBytes: int64(total)}, nil
}

// Check is Scan returning only the number of entries.
func Check(name string, data []byte, limits Limits) (int, error) {
	sum, err := Scan(name, data, limits)
	return sum.Files, err
}

// centralHeaderSig starts every central directory entry.
var centralHeaderSig = []byte("PK\x01\x02")

// EntryBound returns, without parsing any entry, a count no zip reader can
// find more entries than: the larger of the count the end-of-central-
// directory record declares (its zip64 form included) and the number of
// central directory signatures in data. archive/zip reads entries until one
// fails to parse and compares only the low 16 bits of the declared count,
// so the declared count alone can be made to lie; every entry it reads
// starts with a signature, so the signature count cannot.
func EntryBound(data []byte) uint64 {
	n := uint64(bytes.Count(data, centralHeaderSig))
	if declared, ok := declaredEntries(data); ok && declared > n {
		n = declared
	}
	return n
}

// Sizes and signatures of the zip records declaredEntries reads.
const (
	endSig          = 0x06054b50
	endLen          = 22
	end64LocatorSig = 0x07064b50
	end64LocatorLen = 20
	end64Sig        = 0x06064b50
	end64Len        = 56
	maxCommentLen   = 0xffff
)

// declaredEntries reads the entry count from the end-of-central-directory
// record, found as archive/zip finds it (the last signature whose comment
// fits in the data), and from the zip64 record when the 16-bit count is
// saturated.
func declaredEntries(data []byte) (uint64, bool) {
	le := binary.LittleEndian
	at := -1
	for i := len(data) - endLen; i >= 0 && i >= len(data)-endLen-maxCommentLen; i-- {
		if le.Uint32(data[i:]) == endSig && i+endLen+int(le.Uint16(data[i+20:])) <= len(data) {
			at = i
			break
		}
	}
	if at < 0 {
		return 0, false
	}
	end := data[at:]
	n := uint64(max(le.Uint16(end[8:]), le.Uint16(end[10:])))
	if n != 0xffff && le.Uint32(end[12:]) != 0xffffffff && le.Uint32(end[16:]) != 0xffffffff {
		return n, true
	}
	loc := at - end64LocatorLen
	if loc < 0 || le.Uint32(data[loc:]) != end64LocatorSig {
		return n, true
	}
	off := le.Uint64(data[loc+8:])
	if off > uint64(len(data)) || uint64(len(data))-off < end64Len || le.Uint32(data[off:]) != end64Sig {
		return n, true
	}
	rec := data[off:]
	return max(n, le.Uint64(rec[24:]), le.Uint64(rec[32:])), true
}

// entry is one validated archive member and where it goes.
type entry struct {
	file *zip.File
	dest string // slash path relative to the unpack directory
}

// open parses an archive and validates every entry, returning where each
// goes. With maxFiles > 0, an archive that may hold more entries is refused
// before any is parsed.
func open(name string, data []byte, maxFiles int) (*zip.Reader, []entry, error) {
	if !ValidName(name) {
		return nil, nil, fmt.Errorf("package name %q: want 1-64 of A-Z a-z 0-9 _ -", name)
	}
	if maxFiles > 0 {
		if n := EntryBound(data); n > uint64(maxFiles) {
			return nil, nil, fmt.Errorf("package %q: up to %d entries: %w (at most %d)", name, n, ErrLimit, maxFiles)
		}
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, nil, fmt.Errorf("package %q: not a valid zip: %w", name, err)
	}
	if maxFiles > 0 && len(zr.File) > maxFiles {
		return nil, nil, fmt.Errorf("package %q: %d entries: %w (at most %d)", name, len(zr.File), ErrLimit, maxFiles)
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
	maxFiles := 0
	if u.limits.Files > 0 {
		// At least 1, which open reads as a limit (0 is none); the count
		// below refuses what is past the total.
		maxFiles = max(u.limits.Files-u.files, 1)
	}
	_, entries, err := open(name, data, maxFiles)
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
	return u.linkTopModule(name)
}

// linkTopModule makes package name's name.lua the module name when the
// package has no init.lua: a hard link name.lua beside the packages, which
// no package's own files can be (they are all below their package's name).
// A name.lua already there (a directory a zip declared) is left alone.
func (u *Unpacker) linkTopModule(name string) error {
	if u.seen[name+"/init.lua"] == name || u.seen[name+"/"+name+".lua"] != name {
		return nil
	}
	src := filepath.Join(u.dir, name, name+".lua")
	dst := filepath.Join(u.dir, name+".lua")
	if err := os.Link(src, dst); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("package %q: %w", name, err)
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
