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
	// RuntimeDir holds each VM's private directory.
	RuntimeDir string
	// User is who QEMU runs as when this process is root: "" means
	// "nobody", "root" keeps root. Ignored when not root.
	User string
	// NoSandbox turns QEMU's seccomp sandbox off (for QEMU builds without it).
	NoSandbox bool
	// Console keeps the guest's serial console in console.log (slower under TCG).
	Console bool
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
	return m
}

// tcgCacheMiB bounds TCG's translated-code cache per VM. Translations are
// what a VM's host memory is mostly made of under TCG; a small cache keeps
// idle VMs small at the price of retranslating in long runs.
const tcgCacheMiB = 64

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
	accel := "tcg,tb-size=" + strconv.Itoa(tcgCacheMiB)
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

// qemuCredential returns the uid and gid QEMU should run as, or nil to keep ours.
func (m *Machine) qemuCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 || m.User == "root" {
		return nil, nil
	}
	name := m.User
	if name == "" {
		name = "nobody"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("look up qemu user %q: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	if g, err := user.LookupGroup("kvm"); err == nil {
		kvm, _ := strconv.Atoi(g.Gid)
		cred.Groups = append(cred.Groups, uint32(kvm))
	}
	return cred, nil
}

func (m *Machine) sysProcAttr() *syscall.SysProcAttr {
	cred, _ := m.qemuCredential()
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// privateDir creates a 0700 directory for one VM's sockets and logs.
func (m *Machine) privateDir(id string) (string, error) {
	if err := m.prepareRuntimeDir(); err != nil {
		return "", err
	}
	dir := filepath.Join(m.RuntimeDir, "vm-"+id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("create vm dir: %w", err)
	}
	return dir, nil
}

// giveToQEMU hands files and directories to QEMU's user when it differs
// from ours.
func (m *Machine) giveToQEMU(paths ...string) error {
	cred, err := m.qemuCredential()
	if err != nil || cred == nil {
		return err
	}
	for _, p := range paths {
		if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("give %s to the qemu user: %w", p, err)
		}
	}
	return nil
}

// prepareRuntimeDir creates the runtime directory and lets QEMU's user
// through it.
func (m *Machine) prepareRuntimeDir() error {
	if err := os.MkdirAll(m.RuntimeDir, 0o711); err != nil {
		return fmt.Errorf("create runtime dir: %w", err)
	}
	return m.traversable(m.RuntimeDir)
}

// traversable makes sure QEMU's user can pass through dir and its parents
// when QEMU runs as another user. dir itself, which the pool owns, gets
// search permission (no listing); a parent that lacks it is an error that
// says so.
func (m *Machine) traversable(dir string) error {
	cred, err := m.qemuCredential()
	if err != nil || cred == nil {
		return err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("runtime dir: %w", err)
	}
	if st.Mode().Perm()&0o001 == 0 {
		if err := os.Chmod(dir, st.Mode().Perm()|0o111); err != nil {
			return fmt.Errorf("let the qemu user into %s: %w", dir, err)
		}
	}
	for p := filepath.Dir(dir); p != filepath.Dir(p); p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("runtime dir: %w", err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("QEMU runs as uid %d and cannot reach %s: %s is not searchable by others (chmod o+x it, or choose another runtime_dir)", cred.Uid, dir, p)
		}
	}
	return nil
}

// Check verifies the machine can work: QEMU is present and the user exists.
func (m *Machine) Check() error {
	mm := m.withDefaults()
	if _, err := exec.LookPath(mm.QEMU); err != nil {
		return fmt.Errorf("qemu: %w (install qemu-system-x86, or run scripts/setup)", err)
	}
	if mm.Image == nil {
		return fmt.Errorf("no guest image")
	}
	_, err := mm.qemuCredential()
	return err
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
