// Package image builds the guest image: a Debian cloud kernel and a
// compressed newc initramfs holding the static Go agent as /init, the virtio
// kernel modules, LuaJIT and Lua 5.4 with lua-cjson and their shared
// libraries, and the Lua harness.
//
// Every input comes from Debian packages fetched with apt-get download and
// from this module's source. The same inputs give the same bytes: entries are
// sorted, owned by root, dated zero and compressed without a timestamp.
// Images are cached by the hash of their inputs under the cache directory.
package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cavaliergopher/cpio"
	"github.com/dustin/go-humanize"

	"github.com/lualambda/caddy-lualambda/guest/harness"
)

// builderVersion changes whenever the layout of the image changes, so old
// cached images are not reused.
const builderVersion = "1"

// File names inside an image directory.
const (
	KernelFile   = "vmlinuz"
	InitrdFile   = "initrd.img"
	ManifestFile = "manifest.json"
	currentFile  = "current"
)

// Image is a built guest image on disk.
type Image struct {
	// Dir holds the kernel, the initramfs and the manifest.
	Dir string `json:"-"`
	// Hash identifies the image: the SHA-256 of all its inputs.
	Hash string `json:"hash"`
	// KernelPackage is the Debian package the kernel came from.
	KernelPackage string `json:"kernel_package"`
	// Packages lists the .deb files used, by name.
	Packages []string `json:"packages"`
	// InitrdBytes is the compressed initramfs size.
	InitrdBytes int64 `json:"initrd_bytes"`
}

// Kernel is the path of the kernel.
func (im *Image) Kernel() string { return filepath.Join(im.Dir, KernelFile) }

// Initrd is the path of the initramfs.
func (im *Image) Initrd() string { return filepath.Join(im.Dir, InitrdFile) }

// Options control a build.
type Options struct {
	// CacheDir holds packages and images; DefaultCacheDir() when empty.
	CacheDir string
	// SourceDir is this module's root, used to build the agent when
	// AgentBinary is empty; found from the working directory when empty.
	SourceDir string
	// AgentBinary is a prebuilt static agent to use instead of building one.
	AgentBinary string
	// Progress receives progress lines; io.Discard when nil.
	Progress io.Writer
}

// DefaultCacheDir is the user's cache directory for lualambda.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("LUALAMBDA_CACHE"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find cache directory: %w", err)
	}
	return filepath.Join(base, "lualambda"), nil
}

// Build returns the image for the current inputs, building it unless the
// cache already has it. It also marks the image as the cache's current one.
func Build(ctx context.Context, opts Options) (*Image, error) {
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return nil, err
		}
		cacheDir = d
	}
	kernelPkg, err := resolveKernelPackage(ctx)
	if err != nil {
		return nil, err
	}
	pkgs := append([]string{kernelPkg}, guestPackages...)
	debs, err := fetchDebs(ctx, filepath.Join(cacheDir, "debs"), pkgs, progress)
	if err != nil {
		return nil, err
	}
	agent, err := agentBinary(ctx, opts, cacheDir, progress)
	if err != nil {
		return nil, err
	}

	h := sha256.New()
	fmt.Fprintf(h, "lualambda image %s\n", builderVersion)
	for _, d := range debs {
		b, err := os.ReadFile(d)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", d, err)
		}
		fmt.Fprintf(h, "%s %x\n", filepath.Base(d), sha256.Sum256(b))
	}
	fmt.Fprintf(h, "agent %x\nharness %x\n", sha256.Sum256(agent), sha256.Sum256(harness.Source))
	hash := hex.EncodeToString(h.Sum(nil))[:32]

	imagesDir := filepath.Join(cacheDir, "images")
	dir := filepath.Join(imagesDir, hash)
	if im, err := Load(dir); err == nil {
		fmt.Fprintf(progress, "image %s is up to date\n", hash)
		return im, setCurrent(imagesDir, hash)
	}

	fmt.Fprintf(progress, "building image %s\n", hash)
	files, kernel, err := collect(ctx, debs, agent)
	if err != nil {
		return nil, err
	}
	initrd, err := initramfs(files)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(debs))
	for i, d := range debs {
		names[i] = filepath.Base(d)
	}
	im := &Image{Dir: dir, Hash: hash, KernelPackage: kernelPkg, Packages: names, InitrdBytes: int64(len(initrd))}
	if err := write(imagesDir, im, kernel, initrd); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "image %s: kernel %s, initramfs %s (%d files)\n", hash,
		humanize.IBytes(uint64(len(kernel))), humanize.IBytes(uint64(len(initrd))), len(files))
	return im, setCurrent(imagesDir, hash)
}

// Load reads the image in dir.
func Load(dir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("read image manifest: %w", err)
	}
	var im Image
	if err := json.Unmarshal(b, &im); err != nil {
		return nil, fmt.Errorf("decode image manifest %s: %w", dir, err)
	}
	im.Dir = dir
	for _, f := range []string{im.Kernel(), im.Initrd()} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("image %s is incomplete: %w", dir, err)
		}
	}
	return &im, nil
}

// Current loads the image last built in cacheDir (DefaultCacheDir() when
// empty). When none was built, a release binary (one with the image
// embedded, see Embedded) extracts its own image into cacheDir and loads
// that; any other binary explains how to build one (ErrNoImage).
func Current(cacheDir string) (*Image, error) {
	if cacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return nil, err
		}
		cacheDir = d
	}
	im, err := CurrentBuilt(cacheDir)
	if emb := embedded(); emb != nil && errors.Is(err, ErrNoImage) {
		return extract(cacheDir, emb)
	}
	return im, err
}

func setCurrent(imagesDir, hash string) error {
	return writeFileAtomic(filepath.Join(imagesDir, currentFile), []byte(hash+"\n"), 0o644)
}

// file is one entry of the initramfs.
type file struct {
	path string // absolute path in the guest
	mode cpio.FileMode
	data []byte
	link string // symlink target, for symlinks
}

// libDir is where the guest's shared libraries live.
const libDir = "lib/x86_64-linux-gnu/"

// collect takes the guest's files out of the packages and returns them with
// the kernel.
func collect(ctx context.Context, debs []string, agent []byte) ([]file, []byte, error) {
	modules := map[string]bool{"virtio.ko": true, "virtio_ring.ko": true, "virtio_mmio.ko": true, "virtio_console.ko": true}
	wanted := map[string]string{ // path in package → path in guest
		"usr/bin/luajit": "/usr/bin/luajit",
		"usr/lib/x86_64-linux-gnu/libluajit-5.1.so.2.1.0":   "/usr/lib/x86_64-linux-gnu/libluajit-5.1.so.2",
		"usr/lib/x86_64-linux-gnu/liblua5.1-cjson.so.0.0.0": "/usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so",
		// Lua 5.4: Debian's interpreter has the language built in and links
		// readline (which needs tinfo) for its REPL.
		"usr/bin/lua5.4": "/usr/bin/lua5.4",
		"usr/lib/x86_64-linux-gnu/liblua5.4-cjson.so.0.0.0": "/usr/lib/x86_64-linux-gnu/lua/5.4/cjson.so",
		libDir + "libreadline.so.8.2":                       "/" + libDir + "libreadline.so.8",
		libDir + "libtinfo.so.6.4":                          "/" + libDir + "libtinfo.so.6",
		libDir + "libc.so.6":                                "/" + libDir + "libc.so.6",
		libDir + "libm.so.6":                                "/" + libDir + "libm.so.6",
		libDir + "ld-linux-x86-64.so.2":                     "/" + libDir + "ld-linux-x86-64.so.2",
		libDir + "libgcc_s.so.1":                            "/" + libDir + "libgcc_s.so.1",
	}
	var files []file
	var kernel []byte
	found := map[string]bool{}
	for _, deb := range debs {
		got, err := readDeb(ctx, deb, func(name string) bool {
			if strings.HasPrefix(name, "boot/vmlinuz-") {
				return true
			}
			if strings.HasPrefix(name, "lib/modules/") && modules[path.Base(name)] {
				return true
			}
			_, ok := wanted[name]
			return ok
		})
		if err != nil {
			return nil, nil, err
		}
		for _, f := range got {
			switch {
			case strings.HasPrefix(f.Name, "boot/vmlinuz-"):
				kernel = f.Data
				found["kernel"] = true
			case strings.HasPrefix(f.Name, "lib/modules/"):
				files = append(files, file{path: "/lib/modules/" + path.Base(f.Name), mode: 0o644, data: f.Data})
				found[path.Base(f.Name)] = true
			default:
				files = append(files, file{path: wanted[f.Name], mode: cpio.FileMode(f.Mode & 0o755), data: f.Data})
				found[f.Name] = true
			}
		}
	}
	var missing []string
	if !found["kernel"] {
		missing = append(missing, "kernel")
	}
	for m := range modules {
		if !found[m] {
			missing = append(missing, m)
		}
	}
	for w := range wanted {
		if !found[w] {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, nil, fmt.Errorf("packages lack %s", strings.Join(missing, ", "))
	}
	files = append(files,
		file{path: "/init", mode: 0o755, data: agent},
		file{path: harness.InstallPath, mode: 0o644, data: harness.Source},
		file{path: "/lib64/ld-linux-x86-64.so.2", link: "/" + libDir + "ld-linux-x86-64.so.2"},
		file{path: "/etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/:/init\nnobody:x:65534:65534:nobody:/job:/usr/bin/luajit\n")},
		file{path: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnogroup:x:65534:\n")},
	)
	for _, d := range []string{"/dev", "/proc", "/sys", "/tmp", "/job"} {
		files = append(files, file{path: d, mode: cpio.TypeDir | 0o755})
	}
	return files, kernel, nil
}

// initramfs writes files as a gzip-compressed newc archive with every parent
// directory, sorted, owned by root and dated zero.
func initramfs(files []file) ([]byte, error) {
	entries := map[string]file{}
	for _, f := range files {
		entries[f.path] = f
		for d := path.Dir(f.path); d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = file{path: d, mode: cpio.TypeDir | 0o755}
			}
		}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	w := cpio.NewWriter(gz)
	for i, p := range paths {
		f := entries[p]
		h := &cpio.Header{Name: strings.TrimPrefix(p, "/"), Inode: int64(i + 1), Links: 1}
		var body []byte
		switch {
		case f.link != "":
			h.Mode = cpio.TypeSymlink | 0o777
			body = []byte(f.link)
		case f.mode&cpio.TypeDir != 0:
			h.Mode = f.mode
			h.Links = 2
		default:
			h.Mode = cpio.TypeReg | f.mode.Perm()
			body = f.data
		}
		h.Size = int64(len(body))
		if err := w.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("cpio header %s: %w", p, err)
		}
		if _, err := w.Write(body); err != nil {
			return nil, fmt.Errorf("cpio body %s: %w", p, err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("cpio: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return buf.Bytes(), nil
}

// write stores an image under imagesDir atomically: a temporary directory
// renamed into place.
func write(imagesDir string, im *Image, kernel, initrd []byte) error {
	if err := os.MkdirAll(imagesDir, 0o755); err != nil {
		return fmt.Errorf("create image dir: %w", err)
	}
	tmp, err := os.MkdirTemp(imagesDir, ".build-")
	if err != nil {
		return fmt.Errorf("create image dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	manifest, err := json.MarshalIndent(im, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	for name, data := range map[string][]byte{KernelFile: kernel, InitrdFile: initrd, ManifestFile: manifest} {
		if err := os.WriteFile(filepath.Join(tmp, name), data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("chmod image dir: %w", err)
	}
	if err := os.Rename(tmp, im.Dir); err != nil {
		if _, statErr := Load(im.Dir); statErr == nil {
			return nil // a concurrent build finished first
		}
		return fmt.Errorf("install image: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file and renames it over name.
func writeFileAtomic(name string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
