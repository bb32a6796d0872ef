package image_test

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/image"
	"github.com/lualambda/caddy-lualambda/internal/testenv"
)

// TestReproducible builds the image into a fresh cache and compares it with
// the one the other tests use: the same inputs must give the same bytes.
func TestReproducible(t *testing.T) {
	first := testenv.Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	second, err := image.Build(ctx, image.Options{CacheDir: t.TempDir(), SourceDir: testenv.Root(), Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if first.Hash != second.Hash {
		t.Fatalf("same inputs, different hashes: %s vs %s", first.Hash, second.Hash)
	}
	for _, pick := range []func(*image.Image) string{(*image.Image).Kernel, (*image.Image).Initrd} {
		a, err := os.ReadFile(pick(first))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(pick(second))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("%s differs between two builds", pick(second))
		}
	}
	if !bytes.Contains(progress.Bytes(), []byte("building image")) {
		t.Fatalf("a build must show progress, got %q", progress.String())
	}
	// A second build in the same cache is a cache hit.
	progress.Reset()
	if _, err := image.Build(ctx, image.Options{CacheDir: second.Dir + "/../..", SourceDir: testenv.Root(), Progress: &progress}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(progress.Bytes(), []byte("up to date")) {
		t.Fatalf("expected a cache hit, got %q", progress.String())
	}
}

func TestCurrentWithoutImage(t *testing.T) {
	_, err := image.Current(t.TempDir())
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("lualambda image build")) {
		t.Fatalf("want an error that says how to build the image, got %v", err)
	}
}
