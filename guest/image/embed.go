//go:build embedimage

package image

import _ "embed" // for the go:embed directives below

// The guest image compiled into a release binary. scripts/release builds the
// image and copies its files into embedded/ before building with
// -tags embedimage; without the tag embed_none.go is used instead.
var (
	//go:embed embedded/vmlinuz
	embeddedKernel string
	//go:embed embedded/initrd.img
	embeddedInitrd string
	//go:embed embedded/manifest.json
	embeddedManifest string
)

// embedded returns the image compiled into this binary.
func embedded() *embeddedFiles {
	return &embeddedFiles{kernel: embeddedKernel, initrd: embeddedInitrd, manifest: embeddedManifest}
}
