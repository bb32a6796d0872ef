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
)

// Template is the saved state of a VM whose agent is up and waiting for its
// handshake. Clones restore from it in a fraction of a cold boot's time.
//
// The template's guest RAM lives in a file. Clones map that file privately
// (copy-on-write), so they share every page they do not write, and the
// migration stream holds only device state (QEMU's x-ignore-shared).
type Template struct {
	machine Machine
	dir     string
	ram     string
	state   string
	// Created is how long booting and saving the template took.
	Created time.Duration
}

// Dir is where the template's files are.
func (t *Template) Dir() string { return t.dir }

// memBackend is the QEMU object holding guest RAM in the template's file.
func (t *Template) memBackend(shared bool) string {
	share := "off"
	if shared {
		share = "on"
	}
	return "memory-backend-file,id=mem,size=" + strconv.Itoa(t.machine.MemoryMiB) + "M,mem-path=" + t.ram + ",share=" + share
}

// MakeTemplate boots a VM with its RAM in a file under dir, waits for the
// agent, and saves the VM's state there. dir must not exist yet.
func MakeTemplate(ctx context.Context, m Machine, dir string) (*Template, error) {
	m = m.withDefaults()
	start := time.Now()
	if err := m.prepareRuntimeDir(); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	if err := m.traversable(filepath.Dir(dir)); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	t := &Template{machine: m, dir: dir, ram: filepath.Join(dir, "ram"), state: filepath.Join(dir, "state")}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	ram, err := os.OpenFile(t.ram, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	err = ram.Truncate(int64(m.MemoryMiB) << 20)
	ram.Close()
	if err != nil {
		return nil, fmt.Errorf("template: size ram file: %w", err)
	}
	if err := m.giveToQEMU(dir, t.ram); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}

	kernel, initrd, err := openImage(m)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	defer kernel.Close()
	defer initrd.Close()
	vm, err := launch(ctx, &m, t.memBackend(true), m.bootArgs(), []*os.File{kernel, initrd})
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
	if err := t.machine.giveToQEMU(sock); err != nil {
		return err
	}
	out, err := os.OpenFile(t.state, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
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
	return t.machine.giveToQEMU(t.state)
}

// Clone restores a new VM from the template and completes its handshake,
// which gives it its own token, entropy and clock.
func (t *Template) Clone(ctx context.Context) (*VM, error) {
	start := time.Now()
	state, err := os.Open(t.state)
	if err != nil {
		return nil, fmt.Errorf("clone: %w", err)
	}
	defer state.Close()
	m := t.machine
	extra := []string{"-incoming", "defer"}
	vm, err := launch(ctx, &m, t.memBackend(false), extra, []*os.File{state})
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
func restore(ctx context.Context, vm *VM) error {
	q, err := dialQMP(ctx, filepath.Join(vm.dir, "qmp.sock"))
	if err != nil {
		return err
	}
	defer q.close()
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
	return os.RemoveAll(t.dir)
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
