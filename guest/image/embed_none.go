//go:build !embedimage

package image

// embedded returns nil: this binary was built without -tags embedimage and
// has no guest image inside (see embed.go and scripts/release).
func embedded() *embeddedFiles { return nil }
