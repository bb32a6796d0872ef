package vmpool_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lualambda/caddy-lualambda/vmpool"
)

// attackerName is the local user the tests play a hostile neighbour with.
const attackerName = "lualambda-attacker"

// attacker returns the uid and gid of a real unprivileged local user,
// creating the user if needed. It needs root.
func attacker(t *testing.T) (int, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test creates a local user and plays it against a root pool")
	}
	u, err := user.Lookup(attackerName)
	if err != nil {
		out, err := exec.Command("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", attackerName).CombinedOutput()
		if err != nil {
			t.Fatalf("useradd %s: %v: %s", attackerName, err, out)
		}
		if u, err = user.Lookup(attackerName); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		t.Fatalf("%s has uid 0", attackerName)
	}
	return uid, gid
}

// runAs runs a shell script as uid and gid, with no supplementary groups.
func runAs(uid, gid int, script string) (string, error) {
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// fileState is who owns a path and its mode, not following a symlink.
type fileState struct {
	uid, gid uint32
	mode     fs.FileMode
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return fileState{sys.Uid, sys.Gid, st.Mode()}
}

// TestRuntimeDirPlantedByLocalUser has a real local user create the runtime
// directory before a root pool starts, as a way to get root to change or
// fill a directory of theirs. The pool must refuse the directory, say why,
// and put nothing in and change nothing of the user's.
func TestRuntimeDirPlantedByLocalUser(t *testing.T) {
	uid, gid := attacker(t)
	cases := []struct {
		name string
		// plant is run as the attacker, with $RT the runtime dir the pool
		// is given and $LOOT a directory of the attacker's.
		plant string
		// sub, when set, puts the runtime dir below $RT.
		sub string
	}{
		{"dir with a templates symlink", `mkdir -m 0755 "$RT" && mkdir -m 0770 "$LOOT" && ln -s "$LOOT" "$RT/templates"`, ""},
		{"symlink to the attacker's dir", `mkdir -m 0770 "$LOOT" && ln -s "$LOOT" "$RT"`, ""},
		{"world-writable dir", `mkdir -m 0777 "$RT" && chmod 0777 "$RT" && mkdir -m 0770 "$LOOT"`, ""},
		{"the attacker's dir on the way", `mkdir -m 0777 "$RT" && chmod 0777 "$RT" && mkdir -m 0770 "$LOOT"`, "/lualambda"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := fmt.Sprintf("/dev/shm/lualambda-test-%d-%d", os.Getpid(), time.Now().UnixNano())
			rt, loot := base, base+"-loot"
			t.Cleanup(func() {
				os.RemoveAll(rt)
				os.RemoveAll(loot)
			})
			out, err := runAs(uid, gid, fmt.Sprintf("RT=%s LOOT=%s; %s", rt, loot, c.plant))
			if err != nil {
				t.Fatalf("plant as %s: %v: %s", attackerName, err, out)
			}
			watch := []string{rt, loot}
			if _, err := os.Lstat(rt + "/templates"); err == nil {
				watch = append(watch, rt+"/templates")
			}
			before := map[string]fileState{}
			for _, p := range watch {
				before[p] = stateOf(t, p)
			}

			m := machine(t)
			m.RuntimeDir = rt + c.sub
			p, err := vmpool.New(vmpool.Config{Machine: m, Warm: 1, Snapshots: true, BootTimeout: time.Minute})
			if err == nil {
				// Show what the pool would do with it.
				p.Start()
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				if vm, err := p.Acquire(ctx); err == nil {
					vm.Close()
				}
				cancel()
				p.Close()
				t.Errorf("a pool started in a runtime dir that uid %d made", uid)
			} else {
				want := fmt.Sprintf("owned by uid %d", uid)
				if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "runtime_dir") {
					t.Errorf("error %q does not say the runtime_dir is %s", err, want)
				}
				t.Logf("refused: %v", err)
			}
			for _, d := range []string{loot, rt} {
				if d == rt && c.sub == "" {
					continue
				}
				entries, err := os.ReadDir(d)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range entries {
					t.Errorf("the pool put %s in the attacker's directory %s", e.Name(), d)
				}
			}
			for _, p := range watch {
				if after := stateOf(t, p); after != before[p] {
					t.Errorf("%s changed from %+v to %+v", p, before[p], after)
				}
			}
		})
	}
}

// holdLock has another process (flock(1)) hold an exclusive lock on path
// until the test ends, as a live Caddy holds its VMs' locks.
func holdLock(t *testing.T, path string) {
	t.Helper()
	cmd := exec.Command("flock", "--exclusive", path, "cat")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("flock: %v", err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		f.Close() // releases the lock if we got it
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("flock did not take the lock in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStaleVMDirsRemovedAtStart leaves what a killed Caddy leaves (VM
// directories, with and without their lock file, and a template) next to
// the directory of a VM that another live process holds. Starting a pool
// removes the first and keeps the second.
func TestStaleVMDirsRemovedAtStart(t *testing.T) {
	dir, err := os.MkdirTemp(runtimeDir, "stale-")
	if err != nil {
		t.Fatal(err)
	}
	mk := func(path string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("left behind"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	stale := []string{"vm-dead1", "vm-dead2", "vm-dead2.lock", "vm-dead3.lock", "templates/0123-ab", "templates/0123-ab.lock"}
	mk(filepath.Join(dir, "vm-dead1", "console.log"))
	mk(filepath.Join(dir, "vm-dead1", "sub", "file"))
	mk(filepath.Join(dir, "vm-dead2", "console.log"))
	mk(filepath.Join(dir, "vm-dead2.lock"))
	mk(filepath.Join(dir, "vm-dead3.lock"))
	mk(filepath.Join(dir, "templates", "0123-ab", "state"))
	mk(filepath.Join(dir, "templates", "0123-ab.lock"))
	live := []string{"vm-live", "vm-live.lock"}
	mk(filepath.Join(dir, "vm-live", "console.log"))
	mk(filepath.Join(dir, "vm-live.lock"))
	holdLock(t, filepath.Join(dir, "vm-live.lock"))

	m := machine(t)
	m.RuntimeDir = dir
	p, err := vmpool.New(vmpool.Config{Machine: m, Warm: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, n := range stale {
		if _, err := os.Lstat(filepath.Join(dir, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale %s is still there (%v)", n, err)
		}
	}
	for _, n := range live {
		if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
			t.Errorf("a live process's %s was removed: %v", n, err)
		}
	}
}

// procIDs reads the real, effective, saved and filesystem uids (or gids)
// of a process.
func procIDs(t *testing.T, pid int, field string) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return nil
}

// qemuPaths returns a QEMU's private directory (from its QMP socket) and
// the path its guest RAM comes from, as another process can open it.
func qemuPaths(t *testing.T, pid int) (dir, ram string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, arg := range strings.Split(string(b), "\x00") {
		if rest, ok := strings.CutPrefix(arg, "unix:"); ok && strings.Contains(rest, "qmp.sock") {
			dir = filepath.Dir(strings.Split(rest, ",")[0])
		}
		for _, opt := range strings.Split(arg, ",") {
			if p, ok := strings.CutPrefix(opt, "mem-path="); ok {
				ram = strings.Replace(p, "/proc/self/", fmt.Sprintf("/proc/%d/", pid), 1)
			}
		}
	}
	if dir == "" || ram == "" {
		t.Fatalf("no QMP socket or RAM path in QEMU's command line: %q", b)
	}
	return dir, ram
}

// TestVMsRunAsTheirOwnUIDs runs two VMs of a root pool and checks, as each
// VM's uid, that it reaches neither the other's private directory nor
// anything of the template the clones share, nor the guest image.
func TestVMsRunAsTheirOwnUIDs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: QEMU runs as the caller otherwise")
	}
	p := newPool(t, vmpool.Config{Warm: 2, Snapshots: true})
	vms := []*vmpool.VM{acquire(t, p), acquire(t, p)}
	type qemu struct {
		uid, gid int
		dir, ram string
		restored bool
	}
	var qs []qemu
	for _, vm := range vms {
		defer vm.Close()
		uids, gids := procIDs(t, vm.Pid(), "Uid"), procIDs(t, vm.Pid(), "Gid")
		for _, f := range [][]string{uids, gids} {
			for _, v := range f {
				if v != f[0] {
					t.Fatalf("QEMU %d has mixed ids %v", vm.Pid(), f)
				}
			}
		}
		uid, _ := strconv.Atoi(uids[0])
		gid, _ := strconv.Atoi(gids[0])
		dir, ram := qemuPaths(t, vm.Pid())
		qs = append(qs, qemu{uid: uid, gid: gid, dir: dir, ram: ram, restored: vm.Restored})
	}
	a, b := qs[0], qs[1]
	if !a.restored || !b.restored {
		t.Fatal("want two snapshot clones")
	}
	if a.uid == b.uid {
		t.Fatalf("both VMs' QEMU run as uid %d", a.uid)
	}
	for _, q := range qs {
		if q.uid < 0x70000000 || q.uid > 0x7000ffff {
			t.Errorf("QEMU runs as uid %d, outside the default range 0x70000000-0x7000ffff", q.uid)
		}
		st := stateOf(t, q.dir)
		if int(st.uid) != q.uid || st.mode.Perm() != 0o700 {
			t.Errorf("private dir %s: owner %d mode %v, want %d and 0700", q.dir, st.uid, st.mode.Perm(), q.uid)
		}
	}

	// Each uid reaches its own directory, and not the other's.
	for _, pair := range [][2]qemu{{a, b}, {b, a}} {
		me, other := pair[0], pair[1]
		if out, err := runAs(me.uid, me.gid, "ls "+me.dir); err != nil || !strings.Contains(out, "qmp.sock") {
			t.Fatalf("uid %d cannot list its own dir (the check below would prove nothing): %v %s", me.uid, err, out)
		}
		for _, script := range []string{"ls " + other.dir, "cat " + other.dir + "/qmp.sock", "touch " + other.dir + "/x"} {
			if out, err := runAs(me.uid, me.gid, script); err == nil || !strings.Contains(out, "Permission denied") {
				t.Errorf("as uid %d, %q: %v %s; want Permission denied", me.uid, script, err, out)
			}
		}
	}

	// The template's RAM: the VM's uid can read it through its QEMU's
	// descriptor, but neither write nor truncate it.
	if out, err := runAs(a.uid, a.gid, "dd if="+a.ram+" of=/dev/null bs=4096 count=1 status=none"); err != nil {
		t.Fatalf("uid %d cannot read its RAM backing (the checks below would prove nothing): %v %s", a.uid, err, out)
	}
	for _, script := range []string{
		"dd if=/dev/zero of=" + a.ram + " bs=1 count=1 conv=notrunc status=none",
		"truncate -s 0 " + a.ram,
	} {
		if out, err := runAs(a.uid, a.gid, script); err == nil {
			t.Errorf("as uid %d, %q succeeded: a VM can change the template RAM every clone maps (%s)", a.uid, script, out)
		}
	}
	// The template's saved state, and the guest image.
	states, _ := filepath.Glob(filepath.Join(filepath.Dir(filepath.Dir(a.dir)), "*", "templates", "*", "state"))
	more, _ := filepath.Glob(filepath.Join(filepath.Dir(a.dir), "templates", "*", "state"))
	states = append(states, more...)
	if len(states) == 0 {
		t.Fatal("no template state file found")
	}
	im := machine(t).Image
	for _, f := range append(states, im.Kernel(), im.Initrd()) {
		if out, err := runAs(a.uid, a.gid, ": >> "+f); err == nil {
			t.Errorf("uid %d can write %s (%s)", a.uid, f, out)
		}
	}
}

// TestRuntimeDirRefusedWhenOthersCanWrite: a runtime directory of ours that
// others can write to may already hold what they planted; it is refused,
// with the reason, rather than used or quietly fixed.
func TestRuntimeDirRefusedWhenOthersCanWrite(t *testing.T) {
	dir, err := os.MkdirTemp(runtimeDir, "open-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	m := machine(t)
	m.RuntimeDir = dir
	p, err := vmpool.New(vmpool.Config{Machine: m, Warm: 0})
	if err == nil {
		p.Close()
		t.Fatal("a pool started in a runtime dir that anyone can write to")
	}
	if !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("error %q does not say why", err)
	}
	if st := stateOf(t, dir); st.mode.Perm() != 0o777 {
		t.Fatalf("the refused dir's mode was changed to %v", st.mode.Perm())
	}
}

// TestQEMUUserSetting keeps the older settings working: qemu_user names one
// user for every VM's QEMU, and "root" (like running Caddy unprivileged)
// keeps QEMU our own.
func TestQEMUUserSetting(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: QEMU runs as the caller otherwise")
	}
	for _, c := range []struct{ user, uid string }{{"nobody", "65534"}, {"root", "0"}} {
		t.Run(c.user, func(t *testing.T) {
			dir, err := os.MkdirTemp(runtimeDir, "user-")
			if err != nil {
				t.Fatal(err)
			}
			m := machine(t)
			m.RuntimeDir, m.User = dir, c.user
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			vm, err := vmpool.Boot(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Close()
			if got := procIDs(t, vm.Pid(), "Uid"); got[0] != c.uid || got[1] != c.uid {
				t.Fatalf("QEMU runs as %v, want %s", got, c.uid)
			}
			vmDir, _ := qemuPathsNoRAM(t, vm.Pid())
			if st := stateOf(t, vmDir); strconv.Itoa(int(st.uid)) != c.uid || st.mode.Perm() != 0o700 {
				t.Fatalf("private dir owner %d mode %v, want %s and 0700", st.uid, st.mode.Perm(), c.uid)
			}
		})
	}
}

// qemuPathsNoRAM is qemuPaths for a cold-booted VM, which has no RAM file.
func qemuPathsNoRAM(t *testing.T, pid int) (string, error) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "", err
	}
	for _, arg := range strings.Split(string(b), "\x00") {
		if rest, ok := strings.CutPrefix(arg, "unix:"); ok && strings.Contains(rest, "qmp.sock") {
			return filepath.Dir(strings.Split(rest, ",")[0]), nil
		}
	}
	t.Fatalf("no QMP socket in QEMU's command line: %q", b)
	return "", nil
}
