package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	// The Caddyfile adapter and Caddy's standard modules, as cmd/caddy has.
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// The lualambda app and handler, and x402pay, as cmd/caddy has.
	_ "github.com/lualambda/caddy-lualambda"
	_ "github.com/lualambda/caddy-lualambda/x402pay"

	// The Redis storage module, for the storage row.
	_ "github.com/lualambda/caddy-lualambda/storage/redis"

	"github.com/lualambda/caddy-lualambda/internal/bench/measure"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// profileSpec is one lualambda profile of the bench site.
type profileSpec struct {
	Name      string
	MemoryMiB int
	Warm      int
}

// siteSpec is what one config of the in-process Caddy serves.
type siteSpec struct {
	Accel      string
	Image      string
	Snapshots  bool
	Profiles   []profileSpec
	Payment    *paymentSite
	Port       int
	AdminPort  int
	Storage    string
	RuntimeDir string
	// Redis, when set, is the address of a redis-server Caddy keeps its
	// storage on instead of the file system.
	Redis string
}

// paymentSite is the x402pay gate in front of a respond route.
type paymentSite struct {
	PayTo      string
	AlgodURL   string
	AlgodToken string
	FeePayer   string
	Price      string
	Network    string
}

var caddyfileTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin 127.0.0.1:{{.AdminPort}}
	persist_config off
{{- if .Redis}}
	storage redis {
		address {{.Redis}}
		key_prefix lualambda-bench
	}
{{- else}}
	storage file_system {{.Storage}}
{{- end}}
	servers {
		protocols h1
	}
	log {
		level WARN
	}
	lualambda {
		accel {{.Accel}}
		image {{.Image}}
		runtime_dir {{.RuntimeDir}}
		snapshots {{if .Snapshots}}on{{else}}off{{end}}
	}
}

http://127.0.0.1:{{.Port}} {
{{- if .Profiles}}
	handle_path /invoke/* {
		lualambda {
			acquire_timeout 300s
{{- range .Profiles}}
			profile {{.Name}} {
				memory {{.MemoryMiB}}MiB
				timeout 120s
				retention 10s
				output_cap 64KiB
				warm {{.Warm}}
			}
{{- end}}
		}
	}
{{- end}}
	handle /plain {
		respond "ok" 200
	}
{{- with .Payment}}
	handle /paid {
		x402pay {
			pay_to {{.PayTo}}
			network {{.Network}}
			price {{.Price}}
			max_timeout 1h
			facilitator builtin {
				algod {{.AlgodURL}}
				algod_token {{.AlgodToken}}
				fee_payer "{{.FeePayer}}"
			}
		}
		respond "ok" 200
	}
{{- end}}
}
`))

// caddyfile renders the site's Caddyfile.
func (s siteSpec) caddyfile() (string, error) {
	var b strings.Builder
	if err := caddyfileTemplate.Execute(&b, s); err != nil {
		return "", fmt.Errorf("render Caddyfile: %w", err)
	}
	return b.String(), nil
}

// inProcess is a Caddy running in this process on loopback ports, with its
// storage and VM runtime directory in private temporary directories.
type inProcess struct {
	dir        string
	runtimeDir string
	port       int
	adminPort  int
	loaded     bool
}

// newInProcess prepares the directories and ports; load starts Caddy.
func newInProcess() (*inProcess, error) {
	dir, err := os.MkdirTemp("", "lualambda-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench directory: %w", err)
	}
	runtimeDir, err := newRuntimeDir()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s := &inProcess{dir: dir, runtimeDir: runtimeDir}
	if s.port, err = freePort(); err == nil {
		s.adminPort, err = freePort()
	}
	if err != nil {
		s.remove()
		return nil, err
	}
	return s, nil
}

// freePort returns a loopback TCP port nobody listens on.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// URL is the site's base URL.
func (s *inProcess) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.port) }

// AdminURL is the admin endpoint's base URL.
func (s *inProcess) AdminURL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.adminPort) }

// load adapts the site's Caddyfile and loads it, replacing any config this
// process runs; it returns once the site answers.
func (s *inProcess) load(ctx context.Context, spec siteSpec) error {
	spec.Port, spec.AdminPort = s.port, s.adminPort
	spec.Storage, spec.RuntimeDir = filepath.Join(s.dir, "storage"), s.runtimeDir
	body, err := spec.caddyfile()
	if err != nil {
		return err
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return fmt.Errorf("the caddyfile adapter is not built in")
	}
	cfg, warnings, err := adapter.Adapt([]byte(body), map[string]any{"filename": "bench.Caddyfile"})
	if err != nil {
		return fmt.Errorf("adapt the bench Caddyfile: %w", err)
	}
	for _, w := range warnings {
		if strings.Contains(w.Message, "not formatted") {
			continue
		}
		return fmt.Errorf("adapt the bench Caddyfile: %s", w.String())
	}
	if err := caddy.Load(cfg, true); err != nil {
		return fmt.Errorf("load caddy config: %w", err)
	}
	s.loaded = true
	return waitHTTP(ctx, s.URL()+"/plain", 30*time.Second)
}

// waitHTTP waits until url answers any HTTP status.
func waitHTTP(ctx context.Context, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("request %s: %w", url, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("caddy did not answer on %s: %w", url, err)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// stop stops Caddy (its pools end their VMs) and removes the directories,
// reporting QEMU processes left behind.
func (s *inProcess) stop() error {
	var err error
	if s.loaded {
		if serr := caddy.Stop(); serr != nil {
			err = fmt.Errorf("stop caddy: %w", serr)
		}
		s.loaded = false
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(measure.QEMUProcesses(s.runtimeDir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := measure.QEMUProcesses(s.runtimeDir); len(left) > 0 && err == nil {
		err = fmt.Errorf("QEMU processes left after stopping caddy: %v", left)
	}
	s.remove()
	return err
}

func (s *inProcess) remove() {
	_ = os.RemoveAll(s.dir)
	_ = os.RemoveAll(s.runtimeDir)
}

// poolState is one pool in the admin endpoint's answer (GET
// /lualambda/pools): its vmpool.Stats, or why it has none.
type poolState struct {
	vmpool.Stats
	Error string `json:"error"`
}

// pools reads the VM pools' state from a Caddy admin endpoint.
func pools(ctx context.Context, adminURL string) ([]poolState, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, adminURL+"/lualambda/pools", nil)
	if err != nil {
		return nil, fmt.Errorf("pool state: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pool state: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pool state: admin endpoint answered %s", resp.Status)
	}
	var out []poolState
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("pool state: %w", err)
	}
	return out, nil
}

// waitPoolFull waits until the named pool has all its warm VMs ready and is
// creating none, so that the next run measures an idle warm VM.
func waitPoolFull(ctx context.Context, adminURL, name string, limit time.Duration) (poolState, error) {
	deadline := time.Now().Add(limit)
	var last poolState
	for {
		ps, err := pools(ctx, adminURL)
		if err != nil {
			return last, err
		}
		found := false
		for _, p := range ps {
			if p.Name != name {
				continue
			}
			found, last = true, p
			if p.Error != "" && p.Error != "starting" {
				return p, fmt.Errorf("pool %s: %s", name, p.Error)
			}
			if p.Error == "" && p.Ready >= p.Warm && p.Creating == 0 {
				return p, nil
			}
		}
		if !found {
			return last, fmt.Errorf("no pool named %s on the server", name)
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("pool %s not full after %s (ready %d of %d, creating %d)", name, limit, last.Ready, last.Warm, last.Creating)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return last, ctx.Err()
		}
	}
}

// caddyStop stops the Caddy config running in this process.
func caddyStop() error {
	if err := caddy.Stop(); err != nil {
		return fmt.Errorf("stop caddy: %w", err)
	}
	return nil
}

// newRuntimeDir makes a private directory for VMs that QEMU, running as
// nobody when we are root, can traverse. It prefers /dev/shm, as the app
// does.
func newRuntimeDir() (string, error) {
	parent := os.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		parent = "/dev/shm"
	}
	dir, err := os.MkdirTemp(parent, "lualambda-bench-vms-")
	if err != nil {
		return "", fmt.Errorf("VM runtime directory: %w", err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("VM runtime directory: %w", err)
	}
	return dir, nil
}
