package vmpool

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// UIDRange is the uids QEMU runs as when Caddy is root: each VM's QEMU gets
// a uid of its own (and the group of the same number), so that a QEMU that
// a guest took over reaches neither another VM's files and sockets nor its
// process.
type UIDRange struct {
	// First is the first uid of the range.
	First uint32
	// Count is how many uids the range has.
	Count uint32
}

// DefaultUIDRange is 0x70000000-0x7000ffff (1879048192-1879113727): the
// start of the block that systemd's uid allocation documents as unused
// (between its container range, which ends at 0x6fffffff, and the foreign
// range at 0x7ffe0000), below 2^31 so that no tool misreads them as negative.
// 65536 uids leave room for any number of live VMs and let a uid rest long
// before it is used again.
var DefaultUIDRange = UIDRange{First: 0x70000000, Count: 0x10000}

// String shows the range as first-last.
func (r UIDRange) String() string {
	if r.Count == 0 {
		return "none"
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last())
}

// Last is the range's last uid.
func (r UIDRange) Last() uint32 { return r.First + r.Count - 1 }

// ParseUIDRange reads "first-last" (decimal, or hex with 0x).
func ParseUIDRange(s string) (UIDRange, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return UIDRange{}, fmt.Errorf("qemu_uids %q: want first-last, e.g. %s", s, DefaultUIDRange)
	}
	first, err1 := strconv.ParseUint(strings.TrimSpace(a), 0, 32)
	last, err2 := strconv.ParseUint(strings.TrimSpace(b), 0, 32)
	if err1 != nil || err2 != nil || last < first {
		return UIDRange{}, fmt.Errorf("qemu_uids %q: want first-last with first <= last, e.g. %s", s, DefaultUIDRange)
	}
	r := UIDRange{First: uint32(first), Count: uint32(last-first) + 1}
	return r, r.validate()
}

// minVMs is the fewest uids a range may have.
const minVMs = 8

func (r UIDRange) validate() error {
	if r.Count < minVMs {
		return fmt.Errorf("qemu_uids %s: want at least %d uids", r, minVMs)
	}
	if r.First < 1000 {
		return fmt.Errorf("qemu_uids %s: the range must not include system uids (below 1000)", r)
	}
	if uint64(r.First)+uint64(r.Count)-1 >= 0xffffffff {
		return fmt.Errorf("qemu_uids %s: the range must end below 4294967295", r)
	}
	if r.First <= 65534 && r.Last() >= 65534 {
		return fmt.Errorf("qemu_uids %s: the range must not include nobody (65534)", r)
	}
	return nil
}

// checkUnused makes sure no account in /etc/passwd and no subordinate range
// in /etc/subuid or /etc/subgid overlaps the range: their owners could
// reach the VMs' files.
func (r UIDRange) checkUnused() error {
	f, err := os.Open("/etc/passwd")
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Split(sc.Text(), ":")
			if len(fields) < 4 {
				continue
			}
			for _, id := range fields[2:4] {
				n, err := strconv.ParseUint(id, 10, 32)
				if err == nil && uint32(n) >= r.First && uint32(n) <= r.Last() {
					return fmt.Errorf("qemu_uids %s: /etc/passwd has %s with uid or gid %d in the range: choose a range no account uses", r, fields[0], n)
				}
			}
		}
	}
	for _, file := range []string{"/etc/subuid", "/etc/subgid"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			fields := strings.Split(line, ":")
			if len(fields) != 3 {
				continue
			}
			start, err1 := strconv.ParseUint(fields[1], 10, 32)
			count, err2 := strconv.ParseUint(fields[2], 10, 32)
			if err1 != nil || err2 != nil || count == 0 {
				continue
			}
			if start <= uint64(r.Last()) && start+count-1 >= uint64(r.First) {
				return fmt.Errorf("qemu_uids %s: %s gives %s the overlapping range %d-%d: choose another range", r, file, fields[0], start, start+count-1)
			}
		}
	}
	return nil
}

// uidLockDir holds one lock file per uid in use, host-wide, so that two
// Caddy processes (or two pools) never give the same uid to two VMs.
const uidLockDir = "/run/lualambda-uids"

// uidLease is one uid held for one VM until release.
type uidLease struct {
	uid  uint32
	dir  *os.File
	lock *os.File
}

// leaseUID takes a free uid of the range: one whose lock file nobody holds.
// It starts at a random place, so that a uid freed a moment ago is rarely
// the next one given out.
func (r UIDRange) leaseUID() (*uidLease, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	dir, err := openSecureDir("uid lock directory", uidLockDir, dirOptions{create: true, mode: 0o700})
	if err != nil {
		return nil, err
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	start := binary.BigEndian.Uint32(b[:]) % r.Count
	dfd := int(dir.Fd())
	for i := uint32(0); i < r.Count; i++ {
		uid := r.First + (start+i)%r.Count
		name := strconv.FormatUint(uint64(uid), 10)
		fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			dir.Close()
			return nil, fmt.Errorf("lock uid %d: %w", uid, err)
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd)
			if errors.Is(err, unix.EWOULDBLOCK) {
				continue
			}
			dir.Close()
			return nil, fmt.Errorf("lock uid %d: %w", uid, err)
		}
		// The holder before us unlinks its file before unlocking it: a
		// lock on a file no longer in the directory holds nothing.
		var held, named unix.Stat_t
		if unix.Fstat(fd, &held) != nil || unix.Fstatat(dfd, name, &named, unix.AT_SYMLINK_NOFOLLOW) != nil ||
			held.Ino != named.Ino || held.Dev != named.Dev {
			unix.Close(fd)
			continue
		}
		return &uidLease{uid: uid, dir: dir, lock: os.NewFile(uintptr(fd), filepath.Join(uidLockDir, name))}, nil
	}
	dir.Close()
	return nil, fmt.Errorf("qemu_uids %s: every uid of the range is in use", r)
}

// release frees the uid. Call it only once its QEMU has exited and its
// files are gone.
func (l *uidLease) release() {
	if l == nil || l.lock == nil {
		return
	}
	_ = unix.Unlinkat(int(l.dir.Fd()), strconv.FormatUint(uint64(l.uid), 10), 0)
	l.lock.Close()
	l.dir.Close()
	l.lock = nil
}
