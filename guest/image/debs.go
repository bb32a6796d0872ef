package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// kernelMetaPackage is resolved to the versioned kernel package it depends on.
const kernelMetaPackage = "linux-image-cloud-amd64"

// guestPackages are the Debian packages besides the kernel whose files go
// into the guest: LuaJIT (the default runtime), Lua 5.4 with the libraries
// its interpreter links (readline, tinfo), lua-cjson for both, and libc.
var guestPackages = []string{"luajit", "libluajit-5.1-2", "lua5.4", "libreadline8", "libtinfo6", "lua-cjson", "libc6", "libgcc-s1"}

// resolveKernelPackage returns the versioned kernel package behind the
// cloud kernel meta package, such as linux-image-6.1.0-56-cloud-amd64.
func resolveKernelPackage(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "--important", kernelMetaPackage).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w (run apt-get update first)", kernelMetaPackage, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "Depends: "); ok && strings.HasPrefix(name, "linux-image-") {
			return name, nil
		}
	}
	return "", fmt.Errorf("%s depends on no linux-image package (run apt-get update first)", kernelMetaPackage)
}

// debFileName returns the file name apt-get download will give the
// candidate version of pkg.
func debFileName(ctx context.Context, pkg string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache show %s: %w (is it a Debian package? run apt-get update first)", pkg, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if f, ok := strings.CutPrefix(sc.Text(), "Filename: "); ok {
			// apt-get download writes ':' in versions as %3a.
			return strings.ReplaceAll(filepath.Base(f), ":", "%3a"), nil
		}
	}
	return "", fmt.Errorf("apt-cache show %s: no Filename field", pkg)
}

// fetchDebs makes sure the candidate .deb of every package is in dir,
// downloading the missing ones with apt-get, and returns their paths in the
// order of pkgs.
func fetchDebs(ctx context.Context, dir string, pkgs []string, progress io.Writer) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create package cache: %w", err)
	}
	paths := make([]string, len(pkgs))
	var missing []string
	for i, p := range pkgs {
		name, err := debFileName(ctx, p)
		if err != nil {
			return nil, err
		}
		paths[i] = filepath.Join(dir, name)
		if _, err := os.Stat(paths[i]); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return paths, nil
	}
	fmt.Fprintf(progress, "downloading %d Debian packages: %s\n", len(missing), strings.Join(missing, " "))
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q"}, missing...)...)
	cmd.Dir = dir
	cmd.Stdout = progress
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("apt-get download: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("apt-get download did not produce %s", filepath.Base(p))
		}
	}
	return paths, nil
}

// debFile is one file taken out of a package.
type debFile struct {
	Name string // path inside the package, without the leading "./"
	Mode int64
	Data []byte
}

// readDeb returns the regular files of a .deb whose paths keep() accepts,
// using dpkg-deb to turn the package into a plain tar stream.
func readDeb(ctx context.Context, deb string, keep func(name string) bool) ([]debFile, error) {
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("dpkg-deb pipe: %w", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dpkg-deb: %w", err)
	}
	var files []debFile
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = cmd.Wait()
			return nil, fmt.Errorf("read %s: %w", filepath.Base(deb), err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag != tar.TypeReg || !keep(name) {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			_ = cmd.Wait()
			return nil, fmt.Errorf("read %s from %s: %w", name, filepath.Base(deb), err)
		}
		files = append(files, debFile{Name: name, Mode: h.Mode, Data: data})
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", filepath.Base(deb), err, strings.TrimSpace(stderr.String()))
	}
	return files, nil
}
