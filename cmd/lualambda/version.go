package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/lualambda/caddy-lualambda/guest/image"
)

// versionInfo is what `lualambda version` reports.
type versionInfo struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Time     string `json:"commit_time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
	// Embedded is the guest image inside this binary; nil when none is.
	Embedded *image.Image `json:"embedded_image"`
	// Built is the image last built in the cache directory, which is used
	// before the embedded one; nil when none was built.
	Built    *image.Image `json:"built_image"`
	BuiltDir string       `json:"built_image_dir,omitempty"`
	CacheDir string       `json:"cache_dir"`
}

func newVersionCommand() *cobra.Command {
	var asJSON bool
	var cacheDir string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, the Go toolchain and the guest image inside",
		Long: `Print this binary's module version and commit, the Go version it was built
with, and the guest image it carries: release builds (scripts/release) embed
one and use it when no image was built in the cache directory. The image
last built in the cache directory ($LUALAMBDA_CACHE, else the user's cache
directory + /lualambda) is shown too: it takes precedence.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := readVersion(cacheDir)
			if err != nil {
				return err
			}
			if asJSON {
				b, err := json.MarshalIndent(v, "", "  ")
				if err != nil {
					return fmt.Errorf("encode version: %w", err)
				}
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			printVersion(cmd.OutOrStdout(), v)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&cacheDir, "cache", "", "cache directory")
	return cmd
}

// readVersion gathers the build information and the images. It changes
// nothing on disk: the embedded image is described, not extracted.
func readVersion(cacheDir string) (*versionInfo, error) {
	v := &versionInfo{Module: "github.com/lualambda/caddy-lualambda", Version: "(unknown)",
		Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Module, v.Version, v.Go = bi.Main.Path, bi.Main.Version, bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.time":
				v.Time = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	emb, ok, err := image.Embedded()
	if err != nil {
		return nil, err
	}
	if ok {
		v.Embedded = emb
	}
	if cacheDir == "" {
		if cacheDir, err = image.DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	v.CacheDir = cacheDir
	built, err := image.CurrentBuilt(cacheDir)
	switch {
	case err == nil:
		v.Built, v.BuiltDir = built, built.Dir
	case !errors.Is(err, image.ErrNoImage):
		return nil, err
	}
	return v, nil
}

func printVersion(w io.Writer, v *versionInfo) {
	fmt.Fprintf(w, "lualambda %s\n", v.Version)
	fmt.Fprintf(w, "module    %s\n", v.Module)
	if v.Commit != "" {
		modified := ""
		if v.Modified {
			modified = ", modified"
		}
		fmt.Fprintf(w, "commit    %s (%s%s)\n", v.Commit, v.Time, modified)
	}
	fmt.Fprintf(w, "go        %s %s\n", v.Go, v.Platform)
	if e := v.Embedded; e != nil {
		fmt.Fprintf(w, "image     embedded %s: kernel %s, initramfs %s, %d packages\n",
			e.Hash, e.KernelPackage, humanize.IBytes(uint64(e.InitrdBytes)), len(e.Packages))
		for _, p := range e.Packages {
			fmt.Fprintf(w, "            %s\n", p)
		}
	} else {
		fmt.Fprintln(w, "image     none embedded (a release build from scripts/release has one)")
	}
	switch {
	case v.Built != nil:
		fmt.Fprintf(w, "in use    built image %s in %s\n", v.Built.Hash, v.BuiltDir)
	case v.Embedded != nil:
		fmt.Fprintf(w, "in use    the embedded image (none built in %s)\n", v.CacheDir)
	default:
		fmt.Fprintf(w, "in use    none: no image built in %s; run 'lualambda image build'\n", v.CacheDir)
	}
}
