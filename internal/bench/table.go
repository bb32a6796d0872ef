package bench

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
)

// Goals are the figures the product is held to (2 cores, TCG).
const (
	GoalWarmP50MS = 12.0 // warm p50 at most, ms
	GoalWarmTail  = 2.0  // warm p99 at most this many times the p50
	GoalRunsPerS  = 16.0 // sustained runs per second at least
	GoalBootClone = 15.0 // a clone costs at most 1/15 of a cold boot
	GoalPSSMiB    = 24.0 // PSS of an idle 64 MiB VM at most
	// GoalIdleCPUPct is the most CPU an idle warm pool of 8 may use, in
	// percent of one core.
	GoalIdleCPUPct = 1.0
	// GoalX402FloorPct is the least share of the cryptographic floor the
	// paid requests per second must reach, in percent.
	GoalX402FloorPct = 60.0
)

const notMeasuredText = "-"

// verdict says whether a figure meets its goal.
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// WriteTable prints the report as a readable table with the goals beside
// the figures.
func (rep *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "lualambda bench: accel %s, %d cores, QEMU %s\n", rep.Accel, rep.Cores, rep.QEMU)
	fmt.Fprintf(w, "target: %s, profile %s", rep.Target, rep.Profile)
	if rep.MemoryMiB > 0 {
		fmt.Fprintf(w, " (%d MiB)", rep.MemoryMiB)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "what\tfigure\tgoal\tverdict")
	row := func(name, what, figure, goal, v string) {
		switch {
		case rep.skipped(name):
			figure, goal, v = "skipped", "", ""
		case rep.Failed[name] != "":
			figure, goal, v = "FAILED (see below)", "", ""
		case rep.Unavailable[name] != "":
			figure, goal, v = "not available (see below)", "", ""
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", what, figure, goal, v)
	}
	warm, warmV := notMeasuredText, ""
	if rep.WarmP50 > 0 {
		warm = fmt.Sprintf("%.1f / %.1f / %.1f ms (%d runs)", rep.WarmP50, rep.WarmP90, rep.WarmP99, rep.WarmRuns)
		warmV = verdict(rep.WarmP50 <= GoalWarmP50MS && rep.WarmP99 <= GoalWarmTail*rep.WarmP50)
	}
	row(RowWarm, "warm run over HTTP, `return 2 + 2`, p50 / p90 / p99", warm, fmt.Sprintf("p50 ≤ %.0f ms, p99 ≤ %.0f × p50", GoalWarmP50MS, GoalWarmTail), warmV)
	st := notMeasuredText
	if rep.StorageRedisP50 > 0 && rep.StorageFileP50 > 0 {
		st = fmt.Sprintf("%.1f / %.1f ms (%.2fx, %d runs each)", rep.StorageRedisP50, rep.StorageFileP50, rep.StorageRedisVsFile, rep.StorageRuns)
	}
	row(RowStorage, "warm run p50, Caddy storage on Redis / on files", st, "", "")
	cold := notMeasuredText
	if rep.ColdP50 > 0 {
		cold = fmt.Sprintf("%.0f / %.0f ms (%d runs)", rep.ColdP50, rep.ColdP90, rep.ColdRuns)
		if rep.ColdVsWarm > 0 {
			cold += fmt.Sprintf(", %.0fx the warm p50", rep.ColdVsWarm)
		}
	}
	row(RowCold, "pool off: a cold boot per run, p50 / p90", cold, "", "")
	if rep.OnDemandP50 > 0 && !rep.skipped(RowCold) {
		row("", "warm 0 with snapshots: a clone per run, p50", fmt.Sprintf("%.0f ms", rep.OnDemandP50), "", "")
	}
	sus, susV := notMeasuredText, ""
	if rep.RunsPerS > 0 {
		sus = fmt.Sprintf("%.2f runs/s (%d in %.0fs at concurrency %d", rep.RunsPerS, rep.SustainedRuns, rep.DurationS, rep.Concurrency)
		if rep.SustainedErrors > 0 {
			sus += fmt.Sprintf(", %d errors", rep.SustainedErrors)
		}
		sus += ")"
		susV = verdict(rep.RunsPerS >= GoalRunsPerS)
	}
	row(RowSustained, "sustained runs per second, each on a new VM", sus, fmt.Sprintf("≥ %.0f", GoalRunsPerS), susV)
	cr, crV := notMeasuredText, ""
	if rep.CloneMS > 0 {
		cr = fmt.Sprintf("%.0f ms / %.0f ms (a clone is 1/%.1f of a boot)", rep.BootMS, rep.CloneMS, rep.BootClone)
		crV = verdict(rep.BootClone >= GoalBootClone)
	}
	row(RowCreation, "VM creation: cold boot / snapshot clone, p50", cr, fmt.Sprintf("clone ≤ 1/%.0f boot", GoalBootClone), crV)
	mem, memV := notMeasuredText, ""
	if rep.PSSMiB > 0 {
		mem = fmt.Sprintf("%.1f MiB per VM, %.0f MiB for the pool of %d", rep.PSSMiB, rep.PSSTotalMiB, rep.PSSVMs)
		memV = verdict(rep.PSSMiB <= GoalPSSMiB)
	}
	memWhat := "memory: PSS of an idle warm VM"
	if rep.PSSProfileMiB > 0 {
		memWhat += fmt.Sprintf(" (%d MiB profile)", rep.PSSProfileMiB)
	}
	row(RowMemory, memWhat, mem, fmt.Sprintf("≤ %.0f MiB", GoalPSSMiB), memV)
	idle, idleV := notMeasuredText, ""
	if rep.IdleCPUPct != nil {
		idle = fmt.Sprintf("%.2f%% of a core (over %.0fs)", *rep.IdleCPUPct, rep.IdleCPUWindowS)
		idleV = verdict(*rep.IdleCPUPct < GoalIdleCPUPct)
	}
	idleWhat := "CPU of an idle warm pool"
	if rep.IdleCPUVMs > 0 {
		idleWhat += fmt.Sprintf(" of %d (%d MiB profile)", rep.IdleCPUVMs, rep.IdleCPUProfileMiB)
	}
	row(RowIdle, idleWhat, idle, fmt.Sprintf("< %.0f%% of a core", GoalIdleCPUPct), idleV)
	names := make([]string, 0, len(rep.LuaGuestVsHost))
	for n := range rep.LuaGuestVsHost {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		row(RowLua, "Lua CPU: guest / host luajit", notMeasuredText, "", "")
	}
	for _, n := range names {
		row(RowLua, "Lua CPU, "+n+": guest / host luajit", fmt.Sprintf("%.0f ms / %.0f ms (%.1fx)", rep.LuaGuestMS[n], rep.LuaHostMS[n], rep.LuaGuestVsHost[n]), "", "")
	}
	// Paid requests are held to their cryptographic floor (the next row);
	// the plain route is shown for scale.
	pay := notMeasuredText
	if rep.X402Ratio > 0 {
		pay = fmt.Sprintf("%.0f / %.0f req/s (%.0f%%)", rep.X402GatedPS, rep.X402PlainPS, 100*rep.X402Ratio)
	}
	row(RowX402, "x402pay respond route / plain route, throughput", pay, "", "")
	if rep.X402FloorPS > 0 {
		row(RowX402, "x402pay paid requests / cryptographic floor",
			fmt.Sprintf("%.0f / %.0f req/s (%.0f%%)", rep.X402PaidPS, rep.X402FloorPS, rep.X402FloorPct),
			fmt.Sprintf("≥ %.0f%%", GoalX402FloorPct), verdict(rep.X402FloorPct >= GoalX402FloorPct))
		row(RowX402, fmt.Sprintf("floor: %d ed25519 verifies, %d signature, %d group decode per request", floorVerifies, floorSigns, floorDecodes),
			fmt.Sprintf("%.0f / %.0f / %.0f per s on %d goroutines", rep.X402VerifyPS, rep.X402SignPS, rep.X402DecodePS, rep.X402FloorParallel), "", "")
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	notes := func(title string, m map[string]string) {
		if len(m) == 0 {
			return
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, k := range keys {
			fmt.Fprintf(w, "  %s: %s\n", k, m[k])
		}
	}
	notes("not available", rep.Unavailable)
	notes("failed", rep.Failed)
	return nil
}

// skipped reports whether a row was skipped on request.
func (rep *Report) skipped(row string) bool {
	for _, s := range rep.Skipped {
		if s == row {
			return true
		}
	}
	return false
}
