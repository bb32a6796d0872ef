package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRootCaddyRefusesAPlantedRuntimeDir: a real unprivileged local user
// creates the runtime directory first, in a sticky world-writable
// directory as /dev/shm is, with a templates symlink to a directory of
// theirs. A root Caddy must refuse to start with it, say why, and leave
// the user's directory as it was.
func TestRootCaddyRefusesAPlantedRuntimeDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test creates a local user and plays it against a root Caddy")
	}
	const name = "lualambda-attacker"
	u, err := user.Lookup(name)
	if err != nil {
		if out, err := exec.Command("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v: %s", err, out)
		}
		if u, err = user.Lookup(name); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	base := fmt.Sprintf("/tmp/lualambda-planted-%d", time.Now().UnixNano())
	loot := base + "-loot"
	script := fmt.Sprintf("mkdir -m 0777 %s %s && ln -s %s %s/templates", base, loot, loot, base)
	plant := exec.Command("sh", "-c", script)
	plant.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	if out, err := plant.CombinedOutput(); err != nil {
		t.Fatalf("the local user's setup: %v: %s", err, out)
	}
	t.Cleanup(func() { os.RemoveAll(base); os.RemoveAll(loot) })
	before, err := os.Stat(loot)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	caddyfile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte(fmt.Sprintf(`{
	admin off
	persist_config off
	lualambda {
		accel tcg
		runtime_dir %s
	}
}
http://127.0.0.1:%d {
	handle_path /invoke/* {
		lualambda
	}
}
`, base, freePort(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, filepath.Join(bin, "caddy"), "run", "--config", caddyfile, "--adapter", "caddyfile")
	run.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	out, err := run.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("a root Caddy started with a runtime dir a local user planted (err %v):\n%s", err, tail(string(out), 3000))
	}
	if !strings.Contains(string(out), fmt.Sprintf("owned by uid %d", uid)) {
		t.Fatalf("the refusal does not say whose the directory is:\n%s", tail(string(out), 3000))
	}
	entries, _ := os.ReadDir(loot)
	after, _ := os.Stat(loot)
	if len(entries) != 0 || after.Mode() != before.Mode() || after.Sys().(*syscall.Stat_t).Uid != uint32(uid) {
		t.Fatalf("the user's directory changed: %d entries, mode %v -> %v", len(entries), before.Mode(), after.Mode())
	}
}
