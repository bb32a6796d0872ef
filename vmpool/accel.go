package vmpool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"
)

// kvmProbeTimeout bounds the test boot that proves KVM works. A working KVM
// host boots the guest in well under a second; a broken one hangs.
const kvmProbeTimeout = 8 * time.Second

// DetectAccel resolves an accelerator choice. For auto it opens /dev/kvm and
// boots a real VM under KVM with a short deadline; if either fails it falls
// back to TCG and logs a warning saying why. kvm and tcg are returned as
// they are.
func DetectAccel(ctx context.Context, m Machine, want Accel, log *zap.Logger) (Accel, error) {
	if log == nil {
		log = zap.NewNop()
	}
	switch want {
	case AccelKVM, AccelTCG:
		return want, nil
	case AccelAuto, "":
	default:
		return "", fmt.Errorf("accel %q: want auto, kvm or tcg", want)
	}
	reason := ProbeKVM(ctx, m)
	if reason == nil {
		log.Info("KVM works: VMs use hardware acceleration")
		return AccelKVM, nil
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	log.Warn("KVM is unusable, falling back to TCG software emulation: VMs boot and run 5-20x slower",
		zap.Error(reason))
	return AccelTCG, nil
}

// ProbeKVM returns nil when a VM of m boots under KVM, else why not. It
// opens /dev/kvm and boots a real VM, bounded by a short deadline; the VM
// is gone when it returns.
func ProbeKVM(ctx context.Context, m Machine) error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open /dev/kvm: %w", err)
	}
	f.Close()
	m.Accel = AccelKVM
	pctx, cancel := context.WithTimeout(ctx, kvmProbeTimeout)
	defer cancel()
	vm, err := Boot(pctx, m)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("a test boot under KVM did not reach the guest agent within %s (a KVM that hangs guests, such as a nested PVM)", kvmProbeTimeout)
		}
		return fmt.Errorf("test boot under KVM: %w", err)
	}
	vm.Close()
	return nil
}
