package image

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// modulePath is this project's Go module, whose guest/agent package is /init.
const modulePath = "github.com/lualambda/caddy-lualambda"

// agentBinary returns the static agent: the one given in opts, or one built
// from source with flags that make the same source give the same bytes.
func agentBinary(ctx context.Context, opts Options, cacheDir string, progress io.Writer) ([]byte, error) {
	if opts.AgentBinary != "" {
		b, err := os.ReadFile(opts.AgentBinary)
		if err != nil {
			return nil, fmt.Errorf("read agent: %w", err)
		}
		return b, nil
	}
	src := opts.SourceDir
	if src == "" {
		var err error
		if src, err = findSource(); err != nil {
			return nil, err
		}
	}
	out := filepath.Join(cacheDir, "agent", "init")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, fmt.Errorf("create agent dir: %w", err)
	}
	fmt.Fprintln(progress, "building the guest agent (static Go)")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", out, "./guest/agent")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("build agent in %s: %w: %s", src, err, strings.TrimSpace(stderr.String()))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("read agent: %w", err)
	}
	return b, nil
}

// findSource walks up from the working directory to this module's root.
func findSource() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find source: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module "+modulePath) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("the guest agent is built from source: run this inside a checkout of %s, or pass the source directory or a prebuilt agent", modulePath)
		}
		dir = parent
	}
}
