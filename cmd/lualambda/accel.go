package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lualambda/caddy-lualambda/guest/image"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// envAccel names the variable that sets --accel's default.
const envAccel = "LUALAMBDA_ACCEL"

// accelCacheFile is the file in the cache directory that remembers whether
// KVM works on this machine.
const accelCacheFile = "accel.json"

// defaultQEMU is the QEMU binary a local run uses (vmpool's default).
const defaultQEMU = "qemu-system-x86_64"

// defaultAccel is --accel's default: $LUALAMBDA_ACCEL, else auto.
func defaultAccel() string {
	if v := os.Getenv(envAccel); v != "" {
		return v
	}
	return string(vmpool.AccelAuto)
}

// accelKey is what decides whether KVM works for a local run: the QEMU
// binary, /dev/kvm and who may open it, the kernel, and who we are (as
// root, QEMU runs as other uids). A cached answer holds while its key does.
type accelKey struct {
	QEMU        string `json:"qemu"`
	QEMUSize    int64  `json:"qemu_size"`
	QEMUModTime int64  `json:"qemu_mtime_ns"`
	KVM         string `json:"kvm"`
	Kernel      string `json:"kernel"`
	EUID        int    `json:"euid"`
}

// accelRecord is the cache file's content.
type accelRecord struct {
	Key    accelKey     `json:"key"`
	Accel  vmpool.Accel `json:"accel"`
	Reason string       `json:"reason,omitempty"`
	Probed time.Time    `json:"probed"`
}

// accelChoice is the accelerator a local run uses and where it came from.
type accelChoice struct {
	accel  vmpool.Accel
	cached bool   // taken from the cache file, with no probe
	path   string // the cache file that holds it; "" when none
}

// forget removes the cached answer, so that the next run probes again.
func (c accelChoice) forget() {
	if c.path != "" {
		_ = os.Remove(c.path)
	}
}

// machineAccelKey reads the key of this machine for the QEMU binary qemu
// (a name looked up on PATH, or a path).
func machineAccelKey(qemu string) (accelKey, error) {
	if qemu == "" {
		qemu = defaultQEMU
	}
	p, err := exec.LookPath(qemu)
	if err != nil {
		return accelKey{}, fmt.Errorf("qemu: %w", err)
	}
	if p, err = filepath.Abs(p); err != nil {
		return accelKey{}, fmt.Errorf("qemu: %w", err)
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	st, err := os.Stat(p)
	if err != nil {
		return accelKey{}, fmt.Errorf("qemu: %w", err)
	}
	k := accelKey{QEMU: p, QEMUSize: st.Size(), QEMUModTime: st.ModTime().UnixNano(), KVM: "absent", EUID: os.Geteuid()}
	if kst, err := os.Stat("/dev/kvm"); err == nil {
		k.KVM = fmt.Sprintf("%v", kst.Mode())
		if sys, ok := kst.Sys().(*syscall.Stat_t); ok {
			k.KVM = fmt.Sprintf("%v uid %d gid %d", kst.Mode(), sys.Uid, sys.Gid)
		}
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return accelKey{}, fmt.Errorf("uname: %w", err)
	}
	k.Kernel = unix.ByteSliceToString(uts.Release[:])
	return k, nil
}

// resolveAccel turns --accel into the accelerator to boot with. kvm and
// tcg are taken as they are; auto is answered from the cache file in the
// user's cache directory when its key still matches this machine, else by
// a test boot under KVM whose answer is then cached.
func resolveAccel(ctx context.Context, m vmpool.Machine, want vmpool.Accel, stderr io.Writer) (accelChoice, error) {
	if want == vmpool.AccelKVM || want == vmpool.AccelTCG {
		return accelChoice{accel: want}, nil
	}
	path := ""
	if dir, err := image.DefaultCacheDir(); err == nil {
		path = filepath.Join(dir, accelCacheFile)
	}
	return resolveAccelAt(ctx, m, path, stderr)
}

// resolveAccelAt is auto's answer with the cache file at path ("" for no
// cache). A probe that falls back to TCG prints why, once: later runs with
// the same key say nothing.
func resolveAccelAt(ctx context.Context, m vmpool.Machine, path string, stderr io.Writer) (accelChoice, error) {
	key, keyErr := machineAccelKey(m.QEMU)
	if keyErr == nil && path != "" {
		if rec, err := readAccelRecord(path); err == nil && rec.Key == key {
			return accelChoice{accel: rec.Accel, cached: true, path: path}, nil
		}
	}
	reason := vmpool.ProbeKVM(ctx, m)
	if ctx.Err() != nil {
		return accelChoice{}, ctx.Err()
	}
	rec := accelRecord{Key: key, Accel: vmpool.AccelKVM, Probed: time.Now().UTC()}
	if reason != nil {
		rec.Accel, rec.Reason = vmpool.AccelTCG, strings.Join(strings.Fields(strings.ReplaceAll(reason.Error(), "\n", "; ")), " ")
		fmt.Fprintf(stderr, "lualambda: KVM is unusable here, so VMs run under TCG software emulation, 5-20x slower: %s\n", rec.Reason)
	}
	choice := accelChoice{accel: rec.Accel}
	if keyErr != nil || path == "" {
		return choice, nil
	}
	if err := writeAccelRecord(path, rec); err != nil {
		fmt.Fprintf(stderr, "lualambda: cannot remember the answer (%v): the check runs again next time; --accel tcg or %s=tcg skips it\n", err, envAccel)
		return choice, nil
	}
	choice.path = path
	if reason != nil {
		fmt.Fprintf(stderr, "lualambda: the answer is cached in %s until QEMU, /dev/kvm or the kernel change; --accel tcg or %s=tcg skips the check\n", path, envAccel)
	}
	return choice, nil
}

// readAccelRecord reads a cache file; anything unreadable is no answer.
func readAccelRecord(path string) (accelRecord, error) {
	var rec accelRecord
	b, err := os.ReadFile(path)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("read %s: %w", path, err)
	}
	if rec.Accel != vmpool.AccelKVM && rec.Accel != vmpool.AccelTCG {
		return rec, errors.New("read " + path + ": no accelerator in it")
	}
	return rec, nil
}

// writeAccelRecord writes a cache file whole (a temporary file renamed
// over it), so that a concurrent run reads the old answer or the new one.
func writeAccelRecord(path string, rec accelRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create cache directory: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), accelCacheFile+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
