package vmpool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Template is the saved state of a VM whose agent is up and waiting for its
// handshake. Clones restore from it in a fraction of a cold boot's time.
//
// The template's guest RAM lives in a memfd. Clones map it privately
// (copy-on-write), so they share every page they do not write, and the
// migration stream holds only device state (QEMU's x-ignore-shared).
//
// Nothing of a template is a VM's to change: the RAM memfd is root's (ours)
// and sealed against writing, shrinking and growing once the template is
// saved, and the state file is ours, 0600, in a directory of ours. A clone's
// QEMU gets both as inherited descriptors and reaches neither by path, so a
// QEMU that a guest took over can change neither for the other clones.
type Template struct {
	machine Machine
	dir     *lockedDir
	ram     *os.File // the sealed memfd
	// Created is how long booting and saving the template took.
	Created time.Duration
}

// stateFile is the template's saved device state, in its directory.
const stateFile = "state"

// Dir is where the template's files are.
func (t *Template) Dir() string { return t.dir.path }

// memBackend is the QEMU object holding guest RAM in the template's memfd,
// inherited as descriptor fd.
func (t *Template) memBackend(shared bool, fd int) string {
	share := "off"
	if shared {
		share = "on"
	}
	return "memory-backend-file,id=mem,size=" + strconv.Itoa(t.machine.MemoryMiB) + "M,mem-path=/proc/self/fd/" + strconv.Itoa(fd) + ",share=" + share
}

// ramSeals make the template's RAM read-only for good: no write(2), no
// shared writable mapping, no truncation or growth, no undoing the seals.
// Private writable mappings, which clones use, stay allowed.
const ramSeals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// newRAM makes the memfd for a template's guest RAM.
func newRAM(size int64) (*os.File, error) {
	fd, err := unix.MemfdCreate("lualambda-template-ram", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) { // kernels before 6.3
		fd, err = unix.MemfdCreate("lualambda-template-ram", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("create ram memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "lualambda-template-ram")
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("size ram memfd: %w", err)
	}
	return f, nil
}

// MakeTemplate boots a VM with its RAM in a memfd, waits for the agent,
// and saves the VM's state in dir. dir must not exist yet; its parent is
// created if needed and must be safe like the runtime directory.
func MakeTemplate(ctx context.Context, m Machine, dir string) (*Template, error) {
	m = m.withDefaults()
	start := time.Now()
	parent, err := m.openDirLikeRuntime(filepath.Dir(dir))
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	ld, err := makeLockedDir(parent, parent.Name(), filepath.Base(dir), 0o700)
	parent.Close()
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	t := &Template{machine: m, dir: ld}
	ok := false
	defer func() {
		if !ok {
			t.Remove()
		}
	}()
	t.ram, err = newRAM(int64(m.MemoryMiB) << 20)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}

	kernel, initrd, err := openImage(m)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	defer kernel.Close()
	defer initrd.Close()
	// Descriptors 3, 4 and 5: kernel, initramfs and RAM.
	vm, err := launch(ctx, &m, t.memBackend(true, 5), m.bootArgs(), []*os.File{kernel, initrd, t.ram})
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	defer vm.Close()
	if _, err := vm.awaitHello(ctx); err != nil {
		return nil, fmt.Errorf("template: %w%s", err, suffix(vm.StderrTail()))
	}
	if err := t.save(ctx, vm); err != nil {
		return nil, fmt.Errorf("template: %w%s", err, suffix(vm.StderrTail()))
	}
	// The seals need the template VM's shared mapping gone.
	vm.Close()
	if _, err := unix.FcntlInt(t.ram.Fd(), unix.F_ADD_SEALS, ramSeals); err != nil {
		return nil, fmt.Errorf("template: seal ram: %w", err)
	}
	t.Created = time.Since(start)
	ok = true
	return t, nil
}

// save stops the VM and migrates its device state into the state file
// through a unix socket (QEMU's sandbox forbids exec: migration).
func (t *Template) save(ctx context.Context, vm *VM) error {
	q, err := dialQMP(ctx, filepath.Join(vm.dir, "qmp.sock"))
	if err != nil {
		return err
	}
	defer q.close()
	if _, err := q.execute(ctx, "stop", nil); err != nil {
		return err
	}
	caps := map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}
	if _, err := q.execute(ctx, "migrate-set-capabilities", caps); err != nil {
		return fmt.Errorf("snapshots need QEMU's x-ignore-shared (QEMU ≥ 4.0): %w", err)
	}
	sock := filepath.Join(vm.dir, "migrate.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen for migration: %w", err)
	}
	defer ln.Close()
	if err := vm.private.give("migrate.sock"); err != nil {
		return err
	}
	out, err := t.dir.openFile(stateFile, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create state file: %w", err)
	}
	defer out.Close()
	copied := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			copied <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(out, c)
		copied <- err
	}()
	if _, err := q.execute(ctx, "migrate", map[string]any{"uri": "unix:" + sock}); err != nil {
		return err
	}
	if err := q.waitMigration(ctx); err != nil {
		return err
	}
	select {
	case err := <-copied:
		if err != nil {
			return fmt.Errorf("write state: %w", err)
		}
	case <-ctx.Done():
		return fmt.Errorf("write state: %w", ctx.Err())
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// Clone restores a new VM from the template and completes its handshake,
// which gives it its own token, entropy and clock.
func (t *Template) Clone(ctx context.Context) (*VM, error) {
	start := time.Now()
	state, err := t.dir.openFile(stateFile, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("clone: %w", err)
	}
	defer state.Close()
	m := t.machine
	extra := []string{"-incoming", "defer"}
	// Descriptors 3 and 4: the state, and the RAM mapped privately.
	vm, err := launch(ctx, &m, t.memBackend(false, 4), extra, []*os.File{state, t.ram})
	if err != nil {
		return nil, fmt.Errorf("clone: %w", err)
	}
	if err := restore(ctx, vm); err != nil {
		tail := vm.StderrTail()
		vm.Close()
		return nil, fmt.Errorf("clone: %w%s", err, suffix(tail))
	}
	if err := vm.handshake(ctx); err != nil {
		tail := vm.StderrTail()
		vm.Close()
		return nil, fmt.Errorf("clone: %w%s", err, suffix(tail))
	}
	vm.Restored = true
	vm.Created = time.Since(start)
	return vm, nil
}

// restore loads the template's state (inherited as fd 3) into a VM started
// with -incoming defer. The VM runs on by itself once the state is loaded.
// The QMP connection stays open on the VM, for pausing it in the pool.
func restore(ctx context.Context, vm *VM) error {
	q, err := dialQMP(ctx, filepath.Join(vm.dir, "qmp.sock"))
	if err != nil {
		return err
	}
	vm.qmpMu.Lock()
	vm.qmp = q // closed with the VM
	vm.qmpMu.Unlock()
	caps := map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}
	if _, err := q.execute(ctx, "migrate-set-capabilities", caps); err != nil {
		return err
	}
	if _, err := q.execute(ctx, "migrate-incoming", map[string]any{"uri": "fd:3"}); err != nil {
		return err
	}
	// Wait for the load to finish, so a broken state file fails here with
	// QEMU's reason rather than as a silent guest.
	for {
		ret, err := q.execute(ctx, "query-status", nil)
		if err != nil {
			return err
		}
		var st struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(ret, &st); err != nil {
			return fmt.Errorf("query-status: %w", err)
		}
		switch st.Status {
		case "running":
			return nil
		case "paused", "postmigrate":
			_, err := q.execute(ctx, "cont", nil)
			return err
		case "inmigrate", "prelaunch":
		default:
			return fmt.Errorf("restore ended in state %q", st.Status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("restore: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Remove deletes the template's files. Running clones keep their mappings.
func (t *Template) Remove() error {
	if t == nil {
		return errors.New("no template")
	}
	if t.ram != nil {
		t.ram.Close()
		t.ram = nil
	}
	return t.dir.remove()
}

// openImage opens the kernel and initramfs for handing to QEMU as fds 3 and 4.
func openImage(m Machine) (*os.File, *os.File, error) {
	if m.Image == nil {
		return nil, nil, errors.New("no guest image")
	}
	kernel, err := os.Open(m.Image.Kernel())
	if err != nil {
		return nil, nil, err
	}
	initrd, err := os.Open(m.Image.Initrd())
	if err != nil {
		kernel.Close()
		return nil, nil, err
	}
	return kernel, initrd, nil
}
