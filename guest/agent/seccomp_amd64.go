//go:build linux

package main

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The seccomp filter of the Lua process: a deny list, defence in depth
// behind the VM, which is the isolation boundary. Everything not listed is
// allowed (LuaJIT needs mmap and mprotect for its JIT, and user code may
// use the FFI for ordinary system calls); listed calls fail with EPERM.

// seccompData offsets (struct seccomp_data: nr, arch, ip, args[6]).
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16 // low 32 bits of args[0] on little-endian x86-64
)

// x32 system calls have this bit set in their number.
const x32Bit = 0x40000000

// namespaceFlags are the clone and unshare flags that make new namespaces.
// CLONE_NEWTIME (0x80) shares its bit with clone's exit signal, so it is
// only refused for unshare, where clone3 (refused outright) would take it.
const namespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// personalityQuery is personality(0xffffffff), which reads the persona
// without changing it: the only form allowed.
const personalityQuery = 0xffffffff

// deniedSyscalls fail with EPERM whatever their arguments.
var deniedSyscalls = []uint32{
	unix.SYS_SETNS,
	unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_CHROOT,
	unix.SYS_OPEN_TREE, unix.SYS_MOVE_MOUNT, unix.SYS_FSOPEN, unix.SYS_FSCONFIG,
	unix.SYS_FSMOUNT, unix.SYS_FSPICK, unix.SYS_MOUNT_SETATTR,
	unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV,
	unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN,
	unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD,
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
	unix.SYS_REBOOT, unix.SYS_SWAPON, unix.SYS_SWAPOFF,
	unix.SYS_USERFAULTFD,
	unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
	unix.SYS_ACCT, unix.SYS_QUOTACTL, unix.SYS_LOOKUP_DCOOKIE,
	unix.SYS_NAME_TO_HANDLE_AT, unix.SYS_OPEN_BY_HANDLE_AT,
	unix.SYS_IOPL, unix.SYS_IOPERM, unix.SYS_SYSLOG,
	unix.SYS_SETTIMEOFDAY, unix.SYS_CLOCK_SETTIME, unix.SYS_CLOCK_ADJTIME, unix.SYS_ADJTIMEX,
	unix.SYS_SETHOSTNAME, unix.SYS_SETDOMAINNAME,
	unix.SYS_FANOTIFY_INIT,
}

// bpfProgram assembles classic BPF with symbolic jump targets.
type bpfProgram struct {
	ins    []unix.SockFilter
	labels map[string]int
	fixes  []bpfFix
}

// bpfFix is a conditional jump whose true target is a label.
type bpfFix struct {
	at    int
	label string
}

func (p *bpfProgram) stmt(code uint16, k uint32) {
	p.ins = append(p.ins, unix.SockFilter{Code: code, K: k})
}

// jumpIf jumps to label when the condition holds, else falls through.
func (p *bpfProgram) jumpIf(code uint16, k uint32, label string) {
	p.fixes = append(p.fixes, bpfFix{at: len(p.ins), label: label})
	p.ins = append(p.ins, unix.SockFilter{Code: unix.BPF_JMP | code | unix.BPF_K, K: k})
}

func (p *bpfProgram) label(name string) { p.labels[name] = len(p.ins) }

func (p *bpfProgram) load(off uint32) { p.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off) }

func (p *bpfProgram) ret(v uint32) { p.stmt(unix.BPF_RET|unix.BPF_K, v) }

// resolve fills in jump offsets; classic BPF only jumps forwards, at most 255.
func (p *bpfProgram) resolve() ([]unix.SockFilter, error) {
	for _, f := range p.fixes {
		to, ok := p.labels[f.label]
		if !ok {
			return nil, fmt.Errorf("seccomp filter: no label %q", f.label)
		}
		off := to - f.at - 1
		if off < 0 || off > 255 {
			return nil, fmt.Errorf("seccomp filter: jump to %q out of range (%d)", f.label, off)
		}
		p.ins[f.at].Jt = uint8(off)
	}
	return p.ins, nil
}

// seccompFilter builds the Lua process's filter.
func seccompFilter() ([]unix.SockFilter, error) {
	p := &bpfProgram{labels: map[string]int{}}
	eperm := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM))
	enosys := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))

	// Only native x86-64 calls: the i386 entry point numbers calls
	// differently, and x32 ones carry a marker bit.
	p.load(offArch)
	p.jumpIf(unix.BPF_JEQ, unix.AUDIT_ARCH_X86_64, "native")
	p.ret(unix.SECCOMP_RET_KILL_PROCESS)
	p.label("native")
	p.load(offNr)
	p.jumpIf(unix.BPF_JGE, x32Bit, "deny")
	for _, nr := range deniedSyscalls {
		p.jumpIf(unix.BPF_JEQ, nr, "deny")
	}
	p.jumpIf(unix.BPF_JEQ, unix.SYS_CLONE, "clone")
	p.jumpIf(unix.BPF_JEQ, unix.SYS_UNSHARE, "unshare")
	p.jumpIf(unix.BPF_JEQ, unix.SYS_PERSONALITY, "personality")
	// clone3 passes its flags in memory the filter cannot read: say it
	// does not exist, and the C library falls back to clone.
	p.jumpIf(unix.BPF_JEQ, unix.SYS_CLONE3, "nosys")
	p.ret(unix.SECCOMP_RET_ALLOW)

	p.label("clone")
	p.load(offArg0)
	p.jumpIf(unix.BPF_JSET, namespaceFlags, "deny")
	p.ret(unix.SECCOMP_RET_ALLOW)

	p.label("unshare")
	p.load(offArg0)
	p.jumpIf(unix.BPF_JSET, namespaceFlags|unix.CLONE_NEWTIME, "deny")
	p.ret(unix.SECCOMP_RET_ALLOW)

	p.label("personality")
	p.load(offArg0)
	p.jumpIf(unix.BPF_JEQ, personalityQuery, "allow")
	p.ret(eperm)

	p.label("allow")
	p.ret(unix.SECCOMP_RET_ALLOW)
	p.label("nosys")
	p.ret(enosys)
	p.label("deny")
	p.ret(eperm)
	return p.resolve()
}

// loadSeccomp installs the filter on every thread of the calling process.
// no_new_privs must be set first.
func loadSeccomp() error {
	ins, err := seccompFilter()
	if err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}
	r, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	switch {
	case errno != 0:
		return fmt.Errorf("load the seccomp filter: %w", errno)
	case r != 0:
		return fmt.Errorf("load the seccomp filter: thread %d could not be synchronised", r)
	}
	return nil
}
