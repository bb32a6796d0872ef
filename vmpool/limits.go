package vmpool

import (
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
)

// GuestOverheadMiB is the memory a VM gets on top of what its Lua process
// may use: the guest kernel (Debian's cloud kernel alone needs about
// 40 MiB), the unpacked initramfs, the agent and the job's files. A
// profile of 64 MiB for Lua is a VM of 64 + GuestOverheadMiB.
const GuestOverheadMiB = 96

// guestReserveMiB is the guest memory kept back from the Lua process for the
// kernel, the unpacked initramfs, the agent and the job's tmpfs pages.
const guestReserveMiB = 40

// Default package limits inside the guest.
const (
	DefaultPackageBytes = 64 << 20
	DefaultPackageFiles = 4096
)

// LimitsFor derives a job's limits from the VM's memory, the wall-clock
// limit and the output cap. The Lua process's address space is the VM's
// memory less a reserve, so that running out shows as reason "memory"
// rather than a guest that the kernel's OOM killer has to rescue.
func LimitsFor(memoryMiB int, wall time.Duration, outputCap int64) protocol.Limits {
	luaMiB := memoryMiB - guestReserveMiB
	if luaMiB < 16 {
		luaMiB = 16
	}
	cpu := int64(wall/time.Second) + 1
	return protocol.Limits{
		WallMillis:   wall.Milliseconds(),
		CPUSeconds:   cpu,
		MemoryBytes:  int64(luaMiB) << 20,
		OutputBytes:  outputCap,
		ResultBytes:  max(outputCap, 1<<20),
		PackageBytes: DefaultPackageBytes,
		PackageFiles: DefaultPackageFiles,
	}
}
