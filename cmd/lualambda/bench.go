package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lualambda/caddy-lualambda/internal/bench"
)

func newBenchCommand() *cobra.Command {
	var o bench.Options
	var asJSON bool
	var only []string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure latency, throughput, VM creation, memory, Lua speed and payment overhead",
		Long: `bench measures caddy-lualambda the way a user would and compares it, in the
same run, with the baselines it must beat:

  warm       return 2 + 2 over HTTP, p50/p90/p99, each run on a never-used warm VM
  storage    the warm p50 with Caddy's storage on Redis vs on the file system
             (a redis-server this command starts and stops)
  cold       the same with no warm pool: a cold boot per run (and a clone per run)
  sustained  runs per second over --duration at --concurrency, each on a new VM
  creation   VM creation: cold boot vs snapshot clone
  memory     PSS of an idle warm VM, and of the whole pool
  idle       CPU used by a full, idle pool of 8 warm VMs (64 MiB), over 5s
  lua        Lua CPU workloads (fib, string, table) in the guest vs luajit on the host
  x402       a respond route behind x402pay (devnet, a fresh payment per request)
             vs the same route without it, and the paid rate vs its
             cryptographic floor (ed25519 verifies and signs, group decode)
             timed on this machine's cores in the same run

By default it runs Caddy with the lualambda app in this process on loopback
ports, with real VMs, and stops it at the end. --server points the HTTP rows
(warm, cold, sustained, lua) at an existing server's invocation API instead;
creation and memory are then measured with VMs on this machine.

Figures go to stdout (a table, or one JSON object with --json); progress to
stderr. The command fails (exit 1) when a row fails; a row that cannot be
measured here (e.g. no luajit on the host) is reported as not available.`,
		Example: `  lualambda bench
  lualambda bench --duration 60s --concurrency 2 --json
  lualambda bench --skip cold,x402 --runs 100
  lualambda bench --only storage,idle,x402
  lualambda bench --server http://127.0.0.1:8080/invoke --profile nano --admin http://127.0.0.1:2019`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, c := range []struct {
				name string
				v    int
			}{{"concurrency", o.Concurrency}, {"runs", o.Runs}, {"warm", o.Warm}, {"boots", o.Boots}} {
				if c.v < 1 {
					return usageErrorf("--%s must be at least 1, got %d", c.name, c.v)
				}
			}
			if o.Duration <= 0 {
				return usageErrorf("--duration must be positive, got %s", o.Duration)
			}
			if len(only) > 0 {
				if len(o.Skip) > 0 {
					return usageErrorf("--only and --skip do not go together")
				}
				skip, err := rowsBut(only)
				if err != nil {
					return usageErrorf("--only: %v", err)
				}
				o.Skip = skip
			}
			if err := o.Validate(); err != nil {
				return usageErrorf("%v", err)
			}
			o.Progress = cmd.ErrOrStderr()
			o.Logger = newStderrLogger(cmd.ErrOrStderr())
			rep, err := bench.Run(cmd.Context(), o)
			if rep == nil {
				if err == nil {
					err = errors.New("bench produced no report")
				}
				return fmt.Errorf("bench: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if werr := enc.Encode(rep); werr != nil {
					return fmt.Errorf("write report: %w", werr)
				}
			} else if werr := rep.WriteTable(cmd.OutOrStdout()); werr != nil {
				return werr
			}
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Server, "server", "", "an existing server's invocation API for the HTTP rows, e.g. http://127.0.0.1:8080/invoke (default: Caddy in this process)")
	f.StringVar(&o.Admin, "admin", "", "with --server: its Caddy admin endpoint, to read the accelerator and wait for the pool to refill")
	f.StringVar(&o.Profile, "profile", "nano", "profile to run (with --server, one of the server's)")
	f.StringVar(&o.ColdProfile, "cold-profile", "", "with --server: a profile of the server with warm 0, for the cold row")
	f.IntVar(&o.MemoryMiB, "memory", 64, "Lua memory of the profile in MiB (the VM gets 96 MiB more for its kernel)")
	f.IntVar(&o.Warm, "warm", 4, "warm VMs the profile keeps")
	f.StringVar(&o.Image, "image", "", "guest image directory (default: the current image, built first if there is none)")
	f.StringVar(&o.Accel, "accel", "auto", "accelerator: auto, kvm or tcg (auto: KVM when a test boot proves it works)")
	f.DurationVar(&o.Duration, "duration", time.Minute, "sustained window (the payment row uses up to 15s of it per route)")
	f.IntVar(&o.Concurrency, "concurrency", 2, "requests in flight in the sustained and payment rows")
	f.IntVar(&o.Runs, "runs", 40, "warm latency samples")
	f.IntVar(&o.ColdRuns, "cold-runs", 0, "cold-boot latency samples (default runs/8, at least 3)")
	f.IntVar(&o.Boots, "boots", 3, "cold boots of the creation row (it makes 3x as many clones)")
	f.DurationVar(&o.Pace, "pace", 0, "with --server and no --admin: pause between warm runs for the pool to refill (default 1s)")
	f.StringSliceVar(&o.Skip, "skip", nil, "rows not to measure, comma-separated: "+strings.Join(bench.Rows(), ", "))
	f.StringSliceVar(&only, "only", nil, "rows to measure, the others skipped (comma-separated)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object instead of a table")
	return cmd
}

// rowsBut lists the bench rows not named in keep, refusing a name that is
// no row.
func rowsBut(keep []string) ([]string, error) {
	named := map[string]bool{}
	for _, k := range keep {
		named[k] = true
	}
	var skip []string
	for _, r := range bench.Rows() {
		if !named[r] {
			skip = append(skip, r)
		}
		delete(named, r)
	}
	for _, k := range keep {
		if named[k] {
			return nil, fmt.Errorf("unknown row %q (rows: %s)", k, strings.Join(bench.Rows(), ", "))
		}
	}
	return skip, nil
}
