package vmpool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The runtime directory holds every VM's private directory and the snapshot
// templates. When Caddy is root it is root's: a local user who could create
// or replace anything on the way to it could read or swap every tenant's VM
// state, or have root change files of their choosing. So the path is walked
// one component at a time without following symlinks that others control,
// every directory on it must belong to root or to us and must not be
// writable by others (a sticky directory such as /dev/shm or /tmp excepted,
// for the parts above ours), and the runtime directory itself must be ours
// and writable by us alone. Inside it, everything is created, opened and
// handed over relative to a directory descriptor, never through a symlink.

// maxSymlinks bounds the trusted symlinks followed while walking a path.
const maxSymlinks = 40

// dirOptions says how openSecureDir treats the last component.
type dirOptions struct {
	// create makes missing components (with mode; parents get mode too).
	create bool
	mode   uint32
	// othersSearch means QEMU runs as other uids and must pass through: every
	// component must be searchable by others, and the last one, which is
	// ours, is made so.
	othersSearch bool
	// absentOK makes a missing component no error: openSecureDir returns
	// nil, having checked the way up to it.
	absentOK bool
}

// openSecureDir walks path from the root and returns the directory at its
// end, opened read-only, after checking that nobody but root and us can
// change any part of the way there. The name in errors is what the operator
// configured (e.g. "runtime_dir /dev/shm/lualambda").
func openSecureDir(name, path string, o dirOptions) (*os.File, error) {
	if !filepath.IsAbs(path) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		path = abs
	}
	euid := uint32(os.Geteuid())
	configured := filepath.Clean(path)
	// where names a directory in errors, the configured name alone when it
	// is the configured path.
	where := func(here string) string {
		if here == configured {
			return name
		}
		return name + ": " + here
	}
	links := 0
restart:
	path = filepath.Clean(path)
	cur, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: open /: %w", name, err)
	}
	closeCur := func() { unix.Close(cur) }
	var st unix.Stat_t
	if err := unix.Fstat(cur, &st); err != nil {
		closeCur()
		return nil, fmt.Errorf("%s: stat /: %w", name, err)
	}
	comps := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if path == "/" {
		comps = nil
	}
	if len(comps) == 0 {
		closeCur()
		return nil, fmt.Errorf("%s: the root directory cannot be a runtime directory", name)
	}
	done := "/"
	for i, c := range comps {
		last := i == len(comps)-1
		here := filepath.Join(done, c)
		// What is there, without following it?
		var lst unix.Stat_t
		err := unix.Fstatat(cur, c, &lst, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) && o.create {
			mode := o.mode
			if !last {
				mode = 0o755
			}
			if err := unix.Mkdirat(cur, c, mode); err != nil && !errors.Is(err, unix.EEXIST) {
				closeCur()
				return nil, fmt.Errorf("%s: create %s: %w", name, here, err)
			}
			err = unix.Fstatat(cur, c, &lst, unix.AT_SYMLINK_NOFOLLOW)
		}
		if errors.Is(err, unix.ENOENT) && o.absentOK {
			closeCur()
			return nil, nil
		}
		if err != nil {
			closeCur()
			return nil, fmt.Errorf("%s: %s: %w", name, here, err)
		}
		if lst.Mode&unix.S_IFMT == unix.S_IFLNK {
			// Follow a symlink only if nobody but root or us could have
			// put it there or could replace it.
			if lst.Uid != 0 && lst.Uid != euid {
				closeCur()
				return nil, fmt.Errorf("%s is a symlink owned by uid %d, not by root or us: remove it or choose another path", where(here), lst.Uid)
			}
			if links++; links > maxSymlinks {
				closeCur()
				return nil, fmt.Errorf("%s: too many symlinks", name)
			}
			buf := make([]byte, unix.PathMax)
			n, err := unix.Readlinkat(cur, c, buf)
			closeCur()
			if err != nil {
				return nil, fmt.Errorf("%s: read symlink %s: %w", name, here, err)
			}
			target := string(buf[:n])
			if !filepath.IsAbs(target) {
				target = filepath.Join(done, target)
			}
			path = filepath.Join(append([]string{target}, comps[i+1:]...)...)
			goto restart
		}
		flags := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if last {
			flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		}
		next, err := unix.Openat(cur, c, flags, 0)
		closeCur()
		if err != nil {
			if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				return nil, fmt.Errorf("%s is not a directory", where(here))
			}
			return nil, fmt.Errorf("%s: open %s: %w", name, here, err)
		}
		cur = next
		if err := unix.Fstat(cur, &st); err != nil {
			closeCur()
			return nil, fmt.Errorf("%s: stat %s: %w", name, here, err)
		}
		if err := checkDir(where(here), st, last, euid, o); err != nil {
			closeCur()
			return nil, err
		}
		if last && o.othersSearch && st.Mode&0o001 == 0 {
			if err := unix.Fchmod(cur, (st.Mode&0o7777)|0o011); err != nil {
				closeCur()
				return nil, fmt.Errorf("%s: let the VMs' uids through %s: %w", name, here, err)
			}
		}
		done = here
	}
	return os.NewFile(uintptr(cur), path), nil
}

// checkDir applies the ownership and mode rules to one directory on the way.
func checkDir(what string, st unix.Stat_t, last bool, euid uint32, o dirOptions) error {
	perm := st.Mode & 0o7777
	if last {
		if st.Uid != euid {
			return fmt.Errorf("%s is owned by uid %d, not us (uid %d): remove it or choose another runtime_dir", what, st.Uid, euid)
		}
		if perm&0o022 != 0 {
			return fmt.Errorf("%s is writable by group or others (mode %04o): remove it, or chmod go-w it if it is really ours", what, perm)
		}
		return nil
	}
	if st.Uid != 0 && st.Uid != euid {
		return fmt.Errorf("%s is owned by uid %d, not by root or us: anyone who owns a directory on the way can swap what is below it; choose another runtime_dir", what, st.Uid)
	}
	if perm&0o022 != 0 && perm&unix.S_ISVTX == 0 {
		return fmt.Errorf("%s is writable by group or others and not sticky (mode %04o): choose another runtime_dir", what, perm)
	}
	if o.othersSearch && perm&0o001 == 0 {
		return fmt.Errorf("%s is not searchable by others, and QEMU runs as other uids that must pass through it: chmod o+x it, or choose another runtime_dir", what)
	}
	return nil
}

// CheckRuntimeDir checks, without creating or changing anything, that the
// runtime directory at path (if it exists) and every directory on the way
// are safe to use. It is for configuration checks; pools check again, and
// create what is missing, when they start.
func CheckRuntimeDir(path string) error {
	f, err := openSecureDir("runtime_dir "+path, path, dirOptions{absentOK: true})
	if err != nil || f == nil {
		return err
	}
	return f.Close()
}

// lockedDir is a directory inside a trusted parent, with a lock file beside
// it held for as long as the directory is in use: a directory whose lock
// nobody holds was left behind by a process that died, and can go.
type lockedDir struct {
	parent *os.File // the trusted directory it is in
	name   string
	path   string
	dir    *os.File // the directory itself
	lock   *os.File // <name>.lock, flocked
}

// lockSuffix names the lock file beside a locked directory.
const lockSuffix = ".lock"

// makeLockedDir creates parent/name with the given mode, after creating and
// locking parent/name.lock. Neither may exist yet.
func makeLockedDir(parent *os.File, parentPath, name string, mode uint32) (*lockedDir, error) {
	pfd := int(parent.Fd())
	lfd, err := unix.Openat(pfd, name+lockSuffix, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create lock for %s: %w", filepath.Join(parentPath, name), err)
	}
	lock := os.NewFile(uintptr(lfd), filepath.Join(parentPath, name+lockSuffix))
	if err := unix.Flock(lfd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		_ = unix.Unlinkat(pfd, name+lockSuffix, 0)
		return nil, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	fail := func(err error) (*lockedDir, error) {
		_ = unix.Unlinkat(pfd, name+lockSuffix, 0)
		lock.Close()
		return nil, err
	}
	// A cleaner may have taken the fresh lock file for a stale one (it
	// had no holder yet) and removed it: then our lock holds nothing.
	var held, named unix.Stat_t
	if err := unix.Fstat(lfd, &held); err != nil {
		return fail(fmt.Errorf("stat %s: %w", lock.Name(), err))
	}
	if err := unix.Fstatat(pfd, name+lockSuffix, &named, unix.AT_SYMLINK_NOFOLLOW); err != nil || held.Ino != named.Ino || held.Dev != named.Dev {
		lock.Close()
		return nil, fmt.Errorf("lock %s: removed while being taken", lock.Name())
	}
	if err := unix.Mkdirat(pfd, name, mode); err != nil {
		return fail(fmt.Errorf("create %s: %w", filepath.Join(parentPath, name), err))
	}
	dfd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR)
		return fail(fmt.Errorf("open %s: %w", filepath.Join(parentPath, name), err))
	}
	// Hold our own descriptor of the parent: the caller's may be closed.
	pdup, err := unix.Dup(pfd)
	if err != nil {
		unix.Close(dfd)
		_ = unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR)
		return fail(fmt.Errorf("dup: %w", err))
	}
	unix.CloseOnExec(pdup)
	path := filepath.Join(parentPath, name)
	return &lockedDir{
		parent: os.NewFile(uintptr(pdup), parentPath), name: name, path: path,
		dir: os.NewFile(uintptr(dfd), path), lock: lock,
	}, nil
}

// chownAt hands an entry of the directory to uid and gid without following
// a symlink ("" is the directory itself).
func (d *lockedDir) chownAt(entry string, uid, gid int) error {
	if entry == "" {
		if err := unix.Fchown(int(d.dir.Fd()), uid, gid); err != nil {
			return fmt.Errorf("give %s to uid %d: %w", d.path, uid, err)
		}
		return nil
	}
	if err := unix.Fchownat(int(d.dir.Fd()), entry, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("give %s to uid %d: %w", filepath.Join(d.path, entry), uid, err)
	}
	return nil
}

// openFile opens an entry of the directory without following a symlink.
func (d *lockedDir) openFile(entry string, flags int, mode uint32) (*os.File, error) {
	fd, err := unix.Openat(int(d.dir.Fd()), entry, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Join(d.path, entry), err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(d.path, entry)), nil
}

// remove deletes the directory and its contents, then its lock. It reports
// whether everything is gone; on failure the lock stays held.
func (d *lockedDir) remove() error {
	if d == nil || d.lock == nil {
		return nil
	}
	d.dir.Close()
	if err := removeAllAt(d.parent, d.name); err != nil {
		return fmt.Errorf("remove %s: %w", d.path, err)
	}
	_ = unix.Unlinkat(int(d.parent.Fd()), d.name+lockSuffix, 0)
	d.lock.Close()
	d.parent.Close()
	d.lock = nil
	return nil
}

// removeAllAt removes parent/name and everything below it without following
// symlinks (os.RemoveAll already never follows them below the top; the top
// is named relative to the trusted parent).
func removeAllAt(parent *os.File, name string) error {
	fd, err := unix.Openat(int(parent.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		// Not a directory (or a symlink): unlink the entry itself.
		if uerr := unix.Unlinkat(int(parent.Fd()), name, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
			return uerr
		}
		return nil
	}
	dir := os.NewFile(uintptr(fd), name)
	entries, err := dir.ReadDir(-1)
	if err != nil {
		dir.Close()
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeAllAt(dir, e.Name()); err != nil {
				dir.Close()
				return err
			}
			continue
		}
		if err := unix.Unlinkat(fd, e.Name(), 0); err != nil && !errors.Is(err, unix.ENOENT) {
			dir.Close()
			return err
		}
	}
	dir.Close()
	if err := unix.Unlinkat(int(parent.Fd()), name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// removeStale removes the entries of dir whose name starts with prefix and
// whose lock nobody holds: what a killed process left. It returns the names
// it removed. Entries of a live process (its lock held) are left alone.
func removeStale(dir *os.File, prefix string) ([]string, error) {
	entries, err := readDirNames(dir)
	if err != nil {
		return nil, err
	}
	dfd := int(dir.Fd())
	var removed []string
	var errs []error
	for _, n := range entries {
		if !strings.HasPrefix(n, prefix) {
			continue
		}
		base := strings.TrimSuffix(n, lockSuffix)
		if n != base {
			// A lock file: handled with its directory, or alone if the
			// directory is gone.
			if contains(entries, base) {
				continue
			}
		}
		lfd, err := unix.Openat(dfd, base+lockSuffix, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			if err := unix.Flock(lfd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
				unix.Close(lfd)
				continue // in use by a live process
			}
		case errors.Is(err, unix.ENOENT):
			// A directory is made after its lock and removed before it:
			// one without a lock is nobody's.
			lfd = -1
		default:
			errs = append(errs, fmt.Errorf("open lock of %s: %w", base, err))
			continue
		}
		if err := removeAllAt(dir, base); err != nil {
			errs = append(errs, fmt.Errorf("remove stale %s: %w", base, err))
		} else {
			_ = unix.Unlinkat(dfd, base+lockSuffix, 0)
			removed = append(removed, base)
		}
		if lfd >= 0 {
			unix.Close(lfd)
		}
	}
	return removed, errors.Join(errs...)
}

func readDirNames(dir *os.File) ([]string, error) {
	// Read through a fresh descriptor: a directory's read offset is shared.
	fd, err := unix.Openat(int(dir.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir.Name(), err)
	}
	f := os.NewFile(uintptr(fd), dir.Name())
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir.Name(), err)
	}
	return names, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
