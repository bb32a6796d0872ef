package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EmbeddedDir is the directory under the cache directory that the image
// compiled into a release binary is extracted to, one subdirectory per
// image hash.
const EmbeddedDir = "embedded"

// ErrNoImage means the cache directory has no built image marked current.
var ErrNoImage = errors.New("no guest image built")

// embeddedFiles is a guest image held in memory: the files of an image
// directory. Release binaries carry one (see embed.go).
type embeddedFiles struct {
	kernel, initrd, manifest string
}

// files maps each file name of an image directory to its contents.
func (e *embeddedFiles) files() map[string]string {
	return map[string]string{KernelFile: e.kernel, InitrdFile: e.initrd, ManifestFile: e.manifest}
}

// parse decodes and checks the manifest against the files.
func (e *embeddedFiles) parse() (*Image, error) {
	var im Image
	if err := json.Unmarshal([]byte(e.manifest), &im); err != nil {
		return nil, fmt.Errorf("decode embedded image manifest: %w", err)
	}
	if !validHash(im.Hash) {
		return nil, fmt.Errorf("embedded image manifest: bad hash %q", im.Hash)
	}
	if e.kernel == "" {
		return nil, fmt.Errorf("embedded image %s has no kernel", im.Hash)
	}
	if int64(len(e.initrd)) != im.InitrdBytes || e.initrd == "" {
		return nil, fmt.Errorf("embedded image %s: initramfs has %d bytes, manifest says %d", im.Hash, len(e.initrd), im.InitrdBytes)
	}
	return &im, nil
}

// validHash reports whether h looks like an image hash: 32 lower-case hex
// digits, so it is safe as a directory name.
func validHash(h string) bool {
	if len(h) != 32 {
		return false
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Embedded returns the manifest of the guest image compiled into this binary
// (Dir is empty: it is not extracted). ok is false when the binary has none:
// only release builds (scripts/release, -tags embedimage) carry one.
func Embedded() (im *Image, ok bool, err error) {
	e := embedded()
	if e == nil {
		return nil, false, nil
	}
	im, err = e.parse()
	return im, true, err
}

// Embedded reports whether im is the extracted copy of the image compiled
// into this binary.
func (im *Image) Embedded() bool {
	e := embedded()
	if e == nil || im == nil {
		return false
	}
	emb, err := e.parse()
	return err == nil && emb.Hash == im.Hash && filepath.Base(filepath.Dir(im.Dir)) == EmbeddedDir
}

// CurrentBuilt loads the image last built in cacheDir (DefaultCacheDir()
// when empty), ignoring any embedded one; ErrNoImage when none was built.
func CurrentBuilt(cacheDir string) (*Image, error) {
	if cacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return nil, err
		}
		cacheDir = d
	}
	imagesDir := filepath.Join(cacheDir, "images")
	b, err := os.ReadFile(filepath.Join(imagesDir, currentFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w in %s: run 'lualambda image build' (or scripts/setup)", ErrNoImage, cacheDir)
		}
		return nil, fmt.Errorf("read current image: %w", err)
	}
	return Load(filepath.Join(imagesDir, strings.TrimSpace(string(b))))
}

// extract writes emb to cacheDir/embedded/<hash> unless an identical copy
// is there, and loads it. A copy whose bytes differ (damaged, or changed by
// someone) is replaced; the new one is written to a temporary directory and
// renamed into place, so a reader never sees a partial image.
func extract(cacheDir string, emb *embeddedFiles) (*Image, error) {
	im, err := emb.parse()
	if err != nil {
		return nil, err
	}
	parent := filepath.Join(cacheDir, EmbeddedDir)
	dir := filepath.Join(parent, im.Hash)
	if same(dir, emb) {
		return Load(dir)
	}
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("extract embedded image: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, ".extract-")
	if err != nil {
		return nil, fmt.Errorf("extract embedded image: %w", err)
	}
	defer os.RemoveAll(tmp)
	for name, data := range emb.files() {
		// QEMU reopens the kernel and initramfs through /proc/self/fd as
		// its own user, so they must be readable by all.
		if err := writeFileSynced(filepath.Join(tmp, name), data, 0o644); err != nil {
			return nil, fmt.Errorf("extract embedded image: %w", err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("extract embedded image: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if same(dir, emb) {
			return Load(dir) // a concurrent extraction finished first
		}
		// A damaged copy is in the way: move it aside, then install ours.
		stale, err := os.MkdirTemp(parent, ".stale-")
		if err != nil {
			return nil, fmt.Errorf("extract embedded image: %w", err)
		}
		defer os.RemoveAll(stale)
		if err := os.Rename(dir, filepath.Join(stale, "old")); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("replace damaged embedded image %s: %w", dir, err)
		}
		if err := os.Rename(tmp, dir); err != nil && !same(dir, emb) {
			return nil, fmt.Errorf("extract embedded image: %w", err)
		}
	}
	if !same(dir, emb) {
		return nil, fmt.Errorf("embedded image %s changed while being extracted to %s", im.Hash, dir)
	}
	return Load(dir)
}

// same reports whether dir holds exactly the files of emb.
func same(dir string, emb *embeddedFiles) bool {
	for name, data := range emb.files() {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != data {
			return false
		}
	}
	return true
}

// writeFileSynced writes data to a new file and flushes it to disk.
func writeFileSynced(name, data string, perm os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil { // whatever the umask
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
