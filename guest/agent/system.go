//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// modulesDir holds the kernel modules the image builder copied in.
const modulesDir = "/lib/modules"

// moduleOrder is the dependency order of the virtio modules (Debian builds
// them as modules and ships no modules.dep we could use at run time).
var moduleOrder = []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_console"}

// portName is the name the host gives the control port (virtserialport name=).
const portName = "lualambda"

// mountAll mounts the pseudo file systems and the tmpfs directories the job uses.
func mountAll(jobBytes int64) error {
	mounts := []struct {
		fstype, target, data string
		flags                uintptr
	}{
		{"devtmpfs", "/dev", "mode=0755", unix.MS_NOSUID},
		{"proc", "/proc", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "/sys", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"tmpfs", "/tmp", "mode=1777,size=50%", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "/job", fmt.Sprintf("mode=0755,size=%d", jobBytes), unix.MS_NOSUID | unix.MS_NODEV},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.target, err)
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// loadModules loads the virtio modules in dependency order. A module that is
// already present (built in, or loaded before a snapshot) is not an error.
func loadModules() error {
	for _, name := range moduleOrder {
		path := filepath.Join(modulesDir, name+".ko")
		f, err := os.Open(path)
		if err != nil {
			if os.IsNotExist(err) {
				continue // built into this kernel
			}
			return fmt.Errorf("open module %s: %w", name, err)
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("load module %s: %w", name, err)
		}
	}
	return nil
}

// findPort waits for the control port to appear and returns its device path.
func findPort(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err == nil && strings.TrimSpace(string(b)) == portName {
				dev := "/dev/" + filepath.Base(filepath.Dir(n))
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("control port %q did not appear within %s", portName, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// addEntropy mixes host-provided bytes into the kernel's pool and credits
// them, so that a clone restored from a shared snapshot diverges at once.
func addEntropy(seed []byte) error {
	if len(seed) == 0 {
		return nil
	}
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open urandom: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(buf[0:], uint32(len(seed)*8))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(seed)))
	copy(buf[8:], seed)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", errno)
	}
	// Credited entropy reaches the generator only at its next reseed, which
	// the kernel schedules by time: force it, or two clones restored close
	// to the template's last reseed would read the same bytes.
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); errno != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %w", errno)
	}
	return nil
}

// setClock sets the guest's wall clock to the host's.
func setClock(unixNanos int64) error {
	if unixNanos <= 0 {
		return nil
	}
	tv := unix.NsecToTimeval(unixNanos)
	if err := unix.Settimeofday(&tv); err != nil {
		return fmt.Errorf("settimeofday: %w", err)
	}
	return nil
}

// bootMillis returns CLOCK_BOOTTIME in milliseconds.
func bootMillis() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return ts.Nano() / int64(time.Millisecond)
}

// powerOff ends the VM. As pid 1 the agent must never return from main.
func powerOff() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	for {
		time.Sleep(time.Hour)
	}
}

// addrNoRandomize is the personality flag that turns off address-space
// randomisation for the processes the agent starts (linux/personality.h).
const addrNoRandomize = 0x0040000

// sameLayout makes every process the agent starts from now on get the same
// address-space layout. The real Lua process and the warm-up's then run
// LuaJIT at the same virtual addresses, which lets QEMU's TCG reuse the
// translations the warm-up made. It gives nothing away: the real Lua process
// is started once in the snapshot template, so every clone already shares
// its layout, and the VM, not the layout, is the isolation boundary.
func sameLayout() error {
	if _, _, errno := unix.RawSyscall(unix.SYS_PERSONALITY, addrNoRandomize, 0, 0); errno != 0 {
		return fmt.Errorf("personality: %w", errno)
	}
	return nil
}
