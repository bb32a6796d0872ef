package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeEmbedded is an image held in memory, as a release binary holds one.
func fakeEmbedded(hash string) *embeddedFiles {
	initrd := "initramfs bytes of " + hash
	manifest := fmt.Sprintf(`{"hash": %q, "kernel_package": "linux-image-test", "packages": ["a.deb"], "initrd_bytes": %d}`, hash, len(initrd))
	return &embeddedFiles{kernel: "kernel bytes", initrd: initrd, manifest: manifest}
}

// holds reports whether dir has exactly the files of emb.
func holds(dir string, emb *embeddedFiles) bool {
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 3 {
		return false
	}
	for name, data := range emb.files() {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != data {
			return false
		}
	}
	return true
}

const testHash = "0123456789abcdef0123456789abcdef"

func TestExtractEmbedded(t *testing.T) {
	cache := t.TempDir()
	emb := fakeEmbedded(testHash)
	im, err := extract(cache, emb)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cache, EmbeddedDir, testHash); im.Dir != want || im.Hash != testHash || im.KernelPackage != "linux-image-test" {
		t.Fatalf("extracted %+v, want dir %s", im, want)
	}
	for name, data := range emb.files() {
		p := filepath.Join(im.Dir, name)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != data {
			t.Fatalf("%s: %q, %v; want %q", name, b, err, data)
		}
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o644 {
			t.Fatalf("%s: mode %v, %v; QEMU reopens it as another user, want 0644", name, st.Mode(), err)
		}
	}
	entries, err := os.ReadDir(filepath.Join(cache, EmbeddedDir))
	if err != nil || len(entries) != 1 {
		t.Fatalf("want only the image directory left, got %v, %v", entries, err)
	}
	again, err := extract(cache, emb)
	if err != nil || again.Dir != im.Dir {
		t.Fatalf("second extraction: %v, %v", again, err)
	}
}

// TestExtractReplacesDamagedCopy: an extracted copy whose bytes are not the
// binary's (truncated by a full disk, edited by someone) is never booted; it
// is replaced.
func TestExtractReplacesDamagedCopy(t *testing.T) {
	emb := fakeEmbedded(testHash)
	for _, damage := range []struct {
		name string
		do   func(dir string) error
	}{
		{"changed initramfs", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, InitrdFile), []byte("initramfs bytes of someone else"), 0o644)
		}},
		{"truncated kernel", func(dir string) error { return os.Truncate(filepath.Join(dir, KernelFile), 3) }},
		{"missing manifest", func(dir string) error { return os.Remove(filepath.Join(dir, ManifestFile)) }},
	} {
		t.Run(damage.name, func(t *testing.T) {
			cache := t.TempDir()
			im, err := extract(cache, emb)
			if err != nil {
				t.Fatal(err)
			}
			if err := damage.do(im.Dir); err != nil {
				t.Fatal(err)
			}
			if _, err := extract(cache, emb); err != nil {
				t.Fatal(err)
			}
			if !holds(im.Dir, emb) {
				t.Fatal("the damaged copy is still there")
			}
		})
	}
}

// TestExtractRejectsBadManifest: a manifest whose hash is not a hash cannot
// make the extraction write outside the cache, and sizes must agree.
func TestExtractRejectsBadManifest(t *testing.T) {
	for _, c := range []struct {
		name string
		emb  *embeddedFiles
		want string
	}{
		{"path in hash", fakeEmbedded("../../../../tmp/x"), "bad hash"},
		{"short hash", fakeEmbedded("abc"), "bad hash"},
		{"not json", &embeddedFiles{kernel: "k", initrd: "i", manifest: "{"}, "decode"},
		{"size mismatch", &embeddedFiles{kernel: "k", initrd: "i", manifest: `{"hash":"` + testHash + `","initrd_bytes":5}`}, "manifest says 5"},
		{"no kernel", &embeddedFiles{initrd: "i", manifest: `{"hash":"` + testHash + `","initrd_bytes":1}`}, "no kernel"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cache := t.TempDir()
			_, err := extract(cache, c.emb)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
			if entries, _ := os.ReadDir(cache); len(entries) != 0 {
				t.Fatalf("a refused image wrote %v", entries)
			}
		})
	}
}

// TestExtractConcurrently: servers and CLIs starting together each get the
// whole image.
func TestExtractConcurrently(t *testing.T) {
	cache := t.TempDir()
	emb := fakeEmbedded(testHash)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			im, err := extract(cache, emb)
			if err == nil && !holds(im.Dir, emb) {
				err = errors.New("incomplete image")
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(filepath.Join(cache, EmbeddedDir))
	if err != nil || len(entries) != 1 {
		t.Fatalf("want only the image directory left, got %v, %v", entries, err)
	}
}

// TestCurrentBuiltWins: a built image marked current is used before any
// embedded one; without one, the error says so.
func TestCurrentBuiltWins(t *testing.T) {
	cache := t.TempDir()
	if _, err := CurrentBuilt(cache); !errors.Is(err, ErrNoImage) {
		t.Fatalf("empty cache: got %v, want ErrNoImage", err)
	}
	built := &Image{Dir: filepath.Join(cache, "images", testHash), Hash: testHash, InitrdBytes: 1}
	if err := write(filepath.Join(cache, "images"), built, []byte("k"), []byte("i")); err != nil {
		t.Fatal(err)
	}
	if err := setCurrent(filepath.Join(cache, "images"), testHash); err != nil {
		t.Fatal(err)
	}
	im, err := CurrentBuilt(cache)
	if err != nil || im.Dir != built.Dir {
		t.Fatalf("got %+v, %v; want the built image", im, err)
	}
	if im.Embedded() {
		t.Fatal("a built image says it is embedded")
	}
}

// TestNoEmbeddedImage: a binary built without -tags embedimage has none,
// and Current behaves as before.
func TestNoEmbeddedImage(t *testing.T) {
	if embedded() != nil {
		t.Skip("built with -tags embedimage")
	}
	if _, ok, err := Embedded(); ok || err != nil {
		t.Fatalf("Embedded() = %v, %v; want none", ok, err)
	}
	cache := t.TempDir()
	if _, err := Current(cache); !errors.Is(err, ErrNoImage) {
		t.Fatalf("got %v, want ErrNoImage", err)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Fatalf("Current wrote %v", entries)
	}
}
