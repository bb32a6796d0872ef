package measure

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/lualambda/caddy-lualambda/vmpool"
)

// Creation compares the two ways of making a VM, each measured to the point
// where the VM could take a job (agent handshake done, no warm-up).
type Creation struct {
	// Boot is the median cold boot.
	Boot time.Duration
	// Clone is the median snapshot clone (restore and handshake).
	Clone time.Duration
	// Template is how long booting and saving the template took.
	Template time.Duration
	// Boots and Clones are every sample.
	Boots, Clones []time.Duration
}

// Ratio is how many clones cost as much as one cold boot.
func (c Creation) Ratio() float64 {
	if c.Clone <= 0 {
		return 0
	}
	return float64(c.Boot) / float64(c.Clone)
}

// MeasureCreation cold-boots boots VMs one after the other, then makes a
// snapshot template under m.RuntimeDir and restores clones VMs from it, each
// closed as soon as it is ready. perVM bounds each boot or clone.
func MeasureCreation(ctx context.Context, m vmpool.Machine, boots, clones int, perVM time.Duration) (Creation, error) {
	if boots < 1 || clones < 1 {
		return Creation{}, fmt.Errorf("creation: need at least one boot and one clone")
	}
	var c Creation
	for i := 0; i < boots; i++ {
		bctx, cancel := context.WithTimeout(ctx, perVM)
		vm, err := vmpool.Boot(bctx, m)
		cancel()
		if err != nil {
			return Creation{}, fmt.Errorf("cold boot %d: %w", i+1, err)
		}
		c.Boots = append(c.Boots, vm.Created)
		vm.Close()
	}
	if err := os.MkdirAll(m.RuntimeDir, 0o711); err != nil {
		return Creation{}, fmt.Errorf("runtime dir: %w", err)
	}
	dir, err := os.MkdirTemp(m.RuntimeDir, "bench-tpl-")
	if err != nil {
		return Creation{}, fmt.Errorf("template dir: %w", err)
	}
	// MakeTemplate wants to create the directory itself.
	if err := os.Remove(dir); err != nil {
		return Creation{}, fmt.Errorf("template dir: %w", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 2*perVM)
	tpl, err := vmpool.MakeTemplate(tctx, m, dir)
	cancel()
	if err != nil {
		return Creation{}, fmt.Errorf("snapshot template: %w", err)
	}
	defer func() { _ = tpl.Remove() }()
	c.Template = tpl.Created
	for i := 0; i < clones; i++ {
		cctx, cancel := context.WithTimeout(ctx, perVM)
		vm, err := tpl.Clone(cctx)
		cancel()
		if err != nil {
			return Creation{}, fmt.Errorf("snapshot clone %d: %w", i+1, err)
		}
		c.Clones = append(c.Clones, vm.Created)
		vm.Close()
	}
	c.Boot, c.Clone = Percentile(c.Boots, 0.5), Percentile(c.Clones, 0.5)
	return c, nil
}
