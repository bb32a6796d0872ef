// Package vmpool starts QEMU microVMs running the guest agent, hands each
// one a single job, and destroys it afterwards.
package vmpool

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
	"time"

	"github.com/lualambda/caddy-lualambda/guest/image"
)

// Accel is a QEMU accelerator.
type Accel string

// The accelerators. AccelAuto proves KVM with a real boot and falls back to TCG.
const (
	AccelAuto Accel = "auto"
	AccelKVM  Accel = "kvm"
	AccelTCG  Accel = "tcg"
)

// ParseAccel checks an accelerator name.
func ParseAccel(s string) (Accel, error) {
	switch a := Accel(s); a {
	case AccelAuto, AccelKVM, AccelTCG:
		return a, nil
	case "":
		return AccelAuto, nil
	}
	return "", fmt.Errorf("accel %q: want auto, kvm or tcg", s)
}

// Machine describes how to start VMs of one shape from one image.
type Machine struct {
	// QEMU is the qemu-system-x86_64 binary.
	QEMU string
	// Image is the guest kernel and initramfs.
	Image *image.Image
	// Accel must be kvm or tcg here; resolve auto with DetectAccel first.
	Accel Accel
	// MemoryMiB is the guest's RAM.
	MemoryMiB int
	// VCPUs is the guest's CPU count.
	VCPUs int
	// RuntimeDir holds each VM's private directory and the snapshot
	// templates. It must be ours and writable by us alone, and so must be
	// (or belong to root) every directory on the way, sticky ones such as
	// /dev/shm excepted; it is created when absent.
	RuntimeDir string
	// User, when this process is root, makes every VM's QEMU run as that
	// one user (the old, weaker setting: one QEMU that a guest took over
	// can reach the other VMs); "root" keeps root. "" (the default) gives
	// each VM's QEMU a uid of its own from UIDs. Ignored when not root:
	// QEMU then runs as we do.
	User string
	// UIDs is the range each VM's QEMU gets its own uid from when this
	// process is root and User is "". Zero means DefaultUIDRange.
	UIDs UIDRange
	// NoSandbox turns QEMU's seccomp sandbox off (for QEMU builds without it).
	NoSandbox bool
	// Console keeps the guest's serial console in console.log (slower under TCG).
	Console bool
	// TCGCacheMiB bounds TCG's translated-code cache per VM (QEMU's
	// tb-size); 0 means DefaultTCGCacheMiB. Ignored under KVM.
	TCGCacheMiB int
}

// withDefaults fills in unset fields.
func (m Machine) withDefaults() Machine {
	if m.QEMU == "" {
		m.QEMU = "qemu-system-x86_64"
	}
	if m.MemoryMiB == 0 {
		m.MemoryMiB = 128
	}
	if m.VCPUs == 0 {
		m.VCPUs = 1
	}
	if m.RuntimeDir == "" {
		m.RuntimeDir = filepath.Join(os.TempDir(), "lualambda-vms")
	}
	if m.Accel == "" || m.Accel == AccelAuto {
		m.Accel = AccelTCG
	}
	if m.TCGCacheMiB <= 0 {
		m.TCGCacheMiB = DefaultTCGCacheMiB
	}
	return m
}

// DefaultTCGCacheMiB bounds TCG's translated-code cache per VM.
// Translations are the largest part of an idle VM's own memory under TCG;
// a small cache keeps idle VMs small at the price of retranslating in long
// runs.
const DefaultTCGCacheMiB = 64

// qemuEnv is QEMU's whole environment: it inherits nothing of ours, since
// a guest that took over its QEMU could read it there and Caddy's holds
// secrets ({env.*} placeholders such as a fee payer's words). What QEMU gets
// makes an idle VM smaller: one malloc arena instead of one per thread, and
// GLib's slices from malloc rather than from per-thread magazines (about
// 0.5 MiB per VM together).
func qemuEnv() []string {
	return []string{"MALLOC_ARENA_MAX=1", "G_SLICE=always-malloc"}
}

// cmdline is the guest kernel command line.
const cmdline = "quiet loglevel=3 panic=-1 reboot=t pci=off no_timer_check " +
	"i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on rdinit=/init"

// args builds QEMU's command line for a VM whose private directory is dir,
// without the boot arguments (see bootArgs).
//
// memBackend, when set, is a memory-backend-file object to use as the
// guest's RAM (snapshot templates and their clones).
func (m *Machine) args(dir, memBackend string) []string {
	machine := "microvm,x-option-roms=off"
	if memBackend != "" {
		machine += ",memory-backend=mem"
	}
	accel := "tcg,tb-size=" + strconv.Itoa(m.TCGCacheMiB)
	if m.Accel == AccelKVM {
		// Without TCG's need for legacy timers, KVM boots faster with them off.
		machine += ",pit=off,pic=off,rtc=off"
		accel = "kvm"
	}
	serial := "none"
	if m.Console {
		serial = "file:" + filepath.Join(dir, "console.log")
	}
	args := []string{
		"-name", "lualambda",
		"-M", machine,
		"-accel", accel,
		"-m", strconv.Itoa(m.MemoryMiB),
		"-smp", strconv.Itoa(m.VCPUs),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", serial,
		"-device", "virtio-serial-device,max_ports=2",
		"-chardev", "socket,id=ctl,path=" + filepath.Join(dir, "ctl.sock"),
		"-device", "virtserialport,chardev=ctl,name=lualambda",
		"-qmp", "unix:" + filepath.Join(dir, "qmp.sock") + ",server=on,wait=off",
	}
	if m.Accel == AccelKVM {
		args = append(args, "-cpu", "host")
	}
	if memBackend != "" {
		args = append(args, "-object", memBackend)
	}
	if !m.NoSandbox {
		args = append(args, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
	}
	return args
}

// bootArgs are the arguments of a VM that boots: the kernel and initramfs
// as inherited descriptors 3 and 4, so QEMU needs no access to the
// directories holding them, and the kernel command line. A restored clone
// needs none of them, and so keeps no copy of the kernel in its memory.
func (m *Machine) bootArgs() []string {
	kernelArgs := cmdline
	if m.Accel != AccelKVM {
		// -nodefaults leaves microvm without the port the kernel uses to
		// calibrate the TSC against the PIT, and the boot hangs. Under TCG
		// the guest TSC ticks at the host's rate, so tell the guest that rate.
		kernelArgs += " tsc=reliable"
		if khz := hostTSCkHz(); khz > 0 {
			kernelArgs += " tsc_early_khz=" + strconv.Itoa(khz)
		}
	}
	if m.Console {
		kernelArgs = "console=ttyS0 " + kernelArgs
	}
	return []string{"-kernel", "/proc/self/fd/3", "-initrd", "/proc/self/fd/4", "-append", kernelArgs}
}

// identity says who QEMU runs as.
type identity int

const (
	asUs      identity = iota // not root, or User is root
	fixedUser                 // User names one user for every VM
	perVMUID                  // each VM gets a uid of its own from UIDs
)

func (m *Machine) identity() identity {
	switch {
	case os.Geteuid() != 0 || m.User == "root":
		return asUs
	case m.User != "":
		return fixedUser
	}
	return perVMUID
}

// uidRange is the configured range or the default one.
func (m *Machine) uidRange() UIDRange {
	if m.UIDs.Count == 0 {
		return DefaultUIDRange
	}
	return m.UIDs
}

// userCredential looks up the fixed user QEMU runs as.
func (m *Machine) userCredential() (*syscall.Credential, error) {
	u, err := user.Lookup(m.User)
	if err != nil {
		return nil, fmt.Errorf("look up qemu user %q: %w", m.User, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: kvmGroup()}, nil
}

// kvmGroup is the supplementary groups QEMU needs: kvm, for /dev/kvm.
func kvmGroup() []uint32 {
	groups := []uint32{}
	if g, err := user.LookupGroup("kvm"); err == nil {
		if kvm, err := strconv.Atoi(g.Gid); err == nil {
			groups = append(groups, uint32(kvm))
		}
	}
	return groups
}

// openRuntimeDir opens the runtime directory after checking that it and the
// way to it are safe, creating it when absent.
func (m *Machine) openRuntimeDir() (*os.File, error) {
	o := dirOptions{create: true, mode: 0o700}
	if m.identity() != asUs {
		o.mode, o.othersSearch = 0o711, true
	}
	return openSecureDir("runtime_dir "+m.RuntimeDir, m.RuntimeDir, o)
}

// openDirLikeRuntime opens another directory (a template's parent) under
// the runtime directory's rules.
func (m *Machine) openDirLikeRuntime(path string) (*os.File, error) {
	o := dirOptions{create: true, mode: 0o700}
	if m.identity() != asUs {
		o.mode, o.othersSearch = 0o711, true
	}
	return openSecureDir(path, path, o)
}

// vmDir is a VM's private directory and the uid its QEMU runs as. It is
// created root's (ours), the sockets are made in it, and only then are they
// and the directory handed to the VM's uid (0700), never through a symlink.
type vmDir struct {
	*lockedDir
	cred  *syscall.Credential // nil: QEMU runs as us
	lease *uidLease
}

// privateDir creates a VM's private directory and picks its QEMU's uid.
func (m *Machine) privateDir(id string) (*vmDir, error) {
	d := &vmDir{}
	switch m.identity() {
	case fixedUser:
		cred, err := m.userCredential()
		if err != nil {
			return nil, err
		}
		d.cred = cred
	case perVMUID:
		lease, err := m.uidRange().leaseUID()
		if err != nil {
			return nil, err
		}
		d.lease = lease
		d.cred = &syscall.Credential{Uid: lease.uid, Gid: lease.uid, Groups: kvmGroup()}
	}
	rt, err := m.openRuntimeDir()
	if err != nil {
		d.lease.release()
		return nil, err
	}
	defer rt.Close()
	ld, err := makeLockedDir(rt, rt.Name(), "vm-"+id, 0o700)
	if err != nil {
		d.lease.release()
		return nil, fmt.Errorf("create vm dir: %w", err)
	}
	d.lockedDir = ld
	return d, nil
}

// handOver gives the named entries, then the directory itself, to QEMU's
// uid when it is not ours.
func (d *vmDir) handOver(entries ...string) error {
	if d.cred == nil {
		return nil
	}
	for _, e := range append(entries, "") {
		if err := d.chownAt(e, int(d.cred.Uid), int(d.cred.Gid)); err != nil {
			return err
		}
	}
	return nil
}

// give hands one more entry of the directory to QEMU's uid.
func (d *vmDir) give(entry string) error {
	if d.cred == nil {
		return nil
	}
	return d.chownAt(entry, int(d.cred.Uid), int(d.cred.Gid))
}

// sysProcAttr starts QEMU as the directory's uid, killed when we die.
func (d *vmDir) sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: d.cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// close removes the directory and then frees its uid; a uid whose files
// could not be removed is never given out again by this process.
func (d *vmDir) close() {
	if d == nil || d.lockedDir == nil {
		return
	}
	if err := d.remove(); err != nil {
		return
	}
	d.lease.release()
}

// tail returns the last n bytes of a regular file in the directory, read
// without following a symlink or blocking on a pipe that QEMU's uid put there.
func (d *vmDir) tail(entry string, n int64) string {
	if d == nil || d.lockedDir == nil || d.lock == nil {
		return ""
	}
	f, err := d.openFile(entry, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return ""
	}
	off := max(0, st.Size()-n)
	b := make([]byte, min(n, st.Size()))
	k, _ := f.ReadAt(b, off)
	return string(b[:k])
}

// Check verifies the machine can work: QEMU is present, the user exists
// or the uid range is free for us, and the runtime directory is safe.
func (m *Machine) Check() error {
	mm := m.withDefaults()
	if _, err := exec.LookPath(mm.QEMU); err != nil {
		return fmt.Errorf("qemu: %w (install qemu-system-x86, or run scripts/setup)", err)
	}
	if mm.Image == nil {
		return fmt.Errorf("no guest image")
	}
	switch mm.identity() {
	case fixedUser:
		if _, err := mm.userCredential(); err != nil {
			return err
		}
	case perVMUID:
		r := mm.uidRange()
		if err := r.validate(); err != nil {
			return err
		}
		if err := r.checkUnused(); err != nil {
			return err
		}
	}
	return CheckRuntimeDir(mm.RuntimeDir)
}

// Boot cold-boots a VM and completes its handshake. The context bounds the
// whole boot; a boot that does not reach the agent in time is killed.
func Boot(ctx context.Context, m Machine) (*VM, error) {
	m = m.withDefaults()
	if m.Image == nil {
		return nil, fmt.Errorf("boot: no guest image")
	}
	kernel, initrd, err := openImage(m)
	if err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}
	defer kernel.Close()
	defer initrd.Close()
	start := time.Now()
	vm, err := launch(ctx, &m, "", m.bootArgs(), []*os.File{kernel, initrd})
	if err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}
	if _, err := vm.awaitHello(ctx); err != nil {
		tail := vm.StderrTail() + vm.consoleTail()
		vm.Close()
		return nil, fmt.Errorf("boot: %w%s", err, suffix(tail))
	}
	if err := vm.handshake(ctx); err != nil {
		vm.Close()
		return nil, fmt.Errorf("boot: %w", err)
	}
	vm.Created = time.Since(start)
	return vm, nil
}

func suffix(tail string) string {
	if tail == "" {
		return ""
	}
	return "; qemu said: " + tail
}

// hostTSCkHz reads the host CPU's clock rate from /proc/cpuinfo, or 0.
func hostTSCkHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil && mhz > 0 {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}
