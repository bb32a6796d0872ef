package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/lualambda/caddy-lualambda/guest/image"
	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/invokeapi"
	"github.com/lualambda/caddy-lualambda/jobspec"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// invokeOptions are the flags of lualambda invoke.
type invokeOptions struct {
	local     bool
	eval      string
	pkgs      []string
	require   string
	args      []string
	timeout   time.Duration
	memory    int
	vcpus     int
	outputCap int64
	accel     string
	verbose   bool
	id        string
	server    string
	profile   string
	attach    bool
	runtime   string
	stream    bool
	pay       payFlags
}

func newInvokeCommand() *cobra.Command {
	var o invokeOptions
	cmd := &cobra.Command{
		Use:   "invoke [FILE.lua]",
		Short: "Run Lua in a fresh microVM",
		Long: `Run Lua in a fresh microVM and print its result as JSON: against a server
(--server URL or $LUALAMBDA_SERVER), or with --local in a VM on this machine
(--local-test, the LuaLambda CLI's name for it, works too).

The code comes from FILE.lua, from -e CODE, from standard input, or from
packages (--pkg DIR|ZIP, repeatable) with --require MODULE. A bare
expression (2 + 2), a chunk that returns a value, and a chunk that returns
function(args) are all accepted. Arguments (--arg, repeatable) are JSON when
they parse as JSON, else strings.

The result goes to standard output (so | jq works); what the code prints
goes to standard error. A Lua error, timeout or other failure exits 1.

When standard output is a terminal, a run on a server streams: what the
code prints appears as it prints it (its stdout on standard output, its
stderr on standard error), then the result. --stream streams anyway (its
output then shares standard output with the result), --stream=false waits
for the whole answer. The guest sends what the code prints a line at a
time.

Examples:
  echo 'return 2 + 2' | lualambda invoke --server http://localhost:8080/invoke --profile nano
  echo 'return 2 + 2' | lualambda invoke --local
  lualambda invoke --local -e 'return function(a) return "hi " .. a[1] end' --arg Algorand
  lualambda invoke --local --pkg ./blah --require blah.dorp --arg '{"n": 3}'

Each run gets a new random id unless --id names one; -v prints it, and
'lualambda output ID' reads the run again (the CLI keeps its token).

Against a server that asks for payment (HTTP 402, x402), invoke pays the
cheapest offer at or under --max-price in USDC with the wallet (see
lualambda wallet) and runs; -v adds the receipt and the payment's timings.
Only the server's origin (scheme, host, port) is sent the code and paid: a
redirect to another origin is refused, exit 1, with nothing sent there and
nothing signed, unless --allow-cross-origin.`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.attach && !cmd.Flags().Changed("timeout") {
				o.timeout = 10 * time.Minute // a session lasts longer than a run
			}
			if !cmd.Flags().Changed("stream") {
				o.stream = writesToTerminal(cmd.OutOrStdout())
			}
			return runInvoke(cmd.Context(), o, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.local, "local", false, "run in a local VM, with no server (--local-test is the same)")
	// --local-test is the flag of the LuaLambda CLI this one replaces.
	f.BoolVar(&o.local, "local-test", false, "the same as --local")
	_ = f.MarkHidden("local-test")
	f.StringVarP(&o.eval, "eval", "e", "", "Lua code to run")
	f.StringArrayVar(&o.pkgs, "pkg", nil, "a package: a directory or NAME.zip (repeatable)")
	f.StringVar(&o.require, "require", "", "the module to run, such as blah.dorp")
	f.StringArrayVar(&o.args, "arg", nil, "an argument: JSON if it parses, else a string (repeatable)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "with --local: wall-clock limit of the run (10m for a session with --attach); a server uses its profile's")
	f.IntVar(&o.memory, "memory", 128, "with --local: memory for Lua in MiB (the VM gets 96 MiB more for its kernel)")
	f.IntVar(&o.vcpus, "vcpus", 1, "with --local: VM CPU count")
	f.Int64Var(&o.outputCap, "output-cap", 1<<20, "with --local: cap on printed output in bytes")
	f.StringVar(&o.accel, "accel", defaultAccel(), "with --local: accelerator: auto, kvm or tcg ($"+envAccel+" sets the default; auto's answer is cached per machine)")
	f.StringVar(&o.runtime, "runtime", protocol.RuntimeLuaJIT, "with --local: the Lua to run: luajit (LuaJIT 2.1, Lua 5.1) or lua5.4; a server uses its profile's")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "also print the id and timings")
	f.StringVar(&o.id, "id", "", "invocation id, 1-64 of A-Z a-z 0-9 _ - (default: a new random id; -v prints it)")
	f.StringVar(&o.server, "server", "", "the API's URL (default $LUALAMBDA_SERVER, else "+defaultServer+")")
	f.StringVar(&o.profile, "profile", "small", "the server's profile to run on")
	f.BoolVar(&o.stream, "stream", false, "print what the code prints as it runs on the server (default: when standard output is a terminal)")
	f.BoolVar(&o.attach, "attach", false, "start an interactive LuaJIT session and attach to it (Ctrl-] detaches)")
	o.pay.register(f)
	return cmd
}

// loadedJob is the job built from the command line.
type loadedJob struct {
	source  string
	require string
	pkgs    []jobspec.Package
	args    []json.RawMessage
}

// loadJob reads the code and packages the flags name.
func loadJob(o invokeOptions, positional []string, stdin io.Reader) (*loadedJob, error) {
	j := &loadedJob{require: o.require}
	for _, a := range o.args {
		j.args = append(j.args, jobspec.ParseArg(a))
	}
	for _, p := range o.pkgs {
		pkg, err := jobspec.LoadPackage(p)
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		j.pkgs = append(j.pkgs, pkg)
	}
	sources := 0
	if o.eval != "" {
		j.source = o.eval
		sources++
	}
	if len(positional) == 1 {
		b, err := os.ReadFile(positional[0])
		if err != nil {
			return nil, usageErrorf("read %s: %v", positional[0], err)
		}
		j.source = string(b)
		sources++
	}
	if sources > 1 {
		return nil, usageErrorf("give the code once: a file or -e, not both")
	}
	if j.require != "" && !jobspec.ValidModule(j.require) {
		return nil, usageErrorf("--require %q: want a dotted Lua module name such as blah.dorp", j.require)
	}
	if sources == 0 && j.require == "" && o.attach {
		return j, nil // a session may start with nothing but the REPL
	}
	if sources == 0 && j.require == "" {
		if len(j.pkgs) == 1 {
			j.require = j.pkgs[0].Name
		} else if len(j.pkgs) > 1 {
			return nil, usageErrorf("several packages: say which module to run with --require")
		} else {
			if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				return nil, usageErrorf("no code: give FILE.lua, -e CODE, --pkg, or pipe Lua on standard input")
			}
			b, err := io.ReadAll(io.LimitReader(stdin, 16<<20))
			if err != nil {
				return nil, usageErrorf("read standard input: %v", err)
			}
			j.source = string(b)
		}
	}
	if j.source == "" && j.require == "" {
		return nil, usageErrorf("no code to run")
	}
	return j, nil
}

func runInvoke(ctx context.Context, o invokeOptions, positional []string, stdin io.Reader, stdout, stderr io.Writer) error {
	job, err := loadJob(o, positional, stdin)
	if err != nil {
		return err
	}
	id := o.id
	switch {
	case id == "" && o.attach:
		id = "sh-" + randomID()
	case id == "":
		id = randomID()
	case !jobspec.ValidID(id):
		return usageErrorf("--id %q: want 1-64 of A-Z a-z 0-9 _ -", id)
	}
	if !o.local && !validProfile(o.profile) {
		return usageErrorf("--profile %q: want a profile name of letters, digits, _ or - (see lualambda profiles)", o.profile)
	}
	if !o.local && o.attach {
		token, err := startRemoteSession(ctx, o, id, job, stdout)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "[session %s started; Ctrl-] detaches]\r\n", id)
		return attachRemote(ctx, serverURL(o.server), id, token, stdin, stdout, stderr)
	}
	if !o.local {
		return runRemote(ctx, o, id, job, stdout, stderr)
	}
	accel, err := vmpool.ParseAccel(o.accel)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if o.memory < 16 || o.memory > 16384 {
		return usageErrorf("--memory %d: want 16 to 16384 MiB", o.memory)
	}
	if o.runtime != protocol.RuntimeLuaJIT && o.runtime != protocol.RuntimeLua54 {
		return usageErrorf("--runtime %q: want %s or %s", o.runtime, protocol.RuntimeLuaJIT, protocol.RuntimeLua54)
	}
	if o.timeout <= 0 {
		return usageErrorf("--timeout must be positive")
	}
	if o.attach {
		return interrupted(ctx, attachLocal(ctx, o, accel, job, stdin, stdout, stderr))
	}
	res, timings, err := runLocal(ctx, o, accel, job, stderr)
	if err != nil {
		return interrupted(ctx, err)
	}
	return printResult(id, res, timings, o.verbose, stdout, stderr)
}

// writesToTerminal reports whether w is a terminal.
func writesToTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// interrupted turns the error of a local run that a signal (Ctrl-C,
// SIGTERM) cut short into exit status 130, as a shell reports Ctrl-C. By
// then the VM is gone: its QEMU ended and its directory removed.
func interrupted(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return &exitError{code: 130, msg: "interrupted"}
	}
	return err
}

// localTimings are the phases of a local run.
type localTimings struct {
	accel vmpool.Accel
	boot  time.Duration
	run   time.Duration
	total time.Duration
}

// bootLocal boots one VM on this machine, building the image first if
// there is none.
func bootLocal(ctx context.Context, o invokeOptions, want vmpool.Accel, stderr io.Writer) (*vmpool.VM, error) {
	im, err := image.Current("")
	if err != nil {
		fmt.Fprintln(stderr, "lualambda: no guest image yet; building one (once)")
		im, err = image.Build(ctx, image.Options{Progress: stderr})
		if err != nil {
			return nil, fmt.Errorf("build guest image: %w", err)
		}
	}
	m := vmpool.Machine{Image: im, MemoryMiB: o.memory + vmpool.GuestOverheadMiB, VCPUs: o.vcpus}
	if err := m.Check(); err != nil {
		return nil, err
	}
	// What an earlier run left when it was killed (its lock no longer
	// held) goes now; a live run's or server's directories are left alone.
	if _, err := vmpool.PrepareRuntimeDir(m); err != nil {
		return nil, err
	}
	accel, err := resolveAccel(ctx, m, want, stderr)
	if err != nil {
		return nil, err
	}
	m.Accel = accel.accel
	vm, err := bootWith(ctx, m)
	if err != nil && accel.cached && ctx.Err() == nil {
		// The cached answer may be stale in a way its key cannot see:
		// probe again, once.
		accel.forget()
		if accel, err = resolveAccel(ctx, m, want, stderr); err != nil {
			return nil, err
		}
		m.Accel = accel.accel
		vm, err = bootWith(ctx, m)
	}
	if err != nil {
		return nil, fmt.Errorf("start VM: %w", err)
	}
	return vm, nil
}

// bootWith boots one VM on m, bounded by the accelerator's boot timeout.
func bootWith(ctx context.Context, m vmpool.Machine) (*vmpool.VM, error) {
	bootCtx, cancel := context.WithTimeout(ctx, bootTimeout(m.Accel))
	defer cancel()
	vm, err := vmpool.Boot(bootCtx, m)
	if err != nil {
		return nil, err
	}
	vm.Accel = m.Accel
	return vm, nil
}

// runLocal boots one VM, runs the job on it and destroys it.
func runLocal(ctx context.Context, o invokeOptions, want vmpool.Accel, job *loadedJob, stderr io.Writer) (*vmpool.Result, localTimings, error) {
	start := time.Now()
	var t localTimings
	vm, err := bootLocal(ctx, o, want, stderr)
	if err != nil {
		return nil, t, err
	}
	// Run ends the VM in the background; wait for it here, so that QEMU is
	// gone and its directory removed before the CLI exits.
	defer vm.Close()
	t.accel, t.boot = vm.Accel, vm.Created
	runStart := time.Now()
	res, err := vm.Run(ctx, vmpool.Job{
		Source: job.source, Require: job.require, Args: job.args, Packages: job.pkgs,
		Limits:  vmpool.LimitsFor(o.memory+vmpool.GuestOverheadMiB, o.timeout, o.outputCap),
		Runtime: o.runtime,
	}, func(_ protocol.Stream, data []byte) { _, _ = stderr.Write(data) })
	t.run = time.Since(runStart)
	t.total = time.Since(start)
	if err != nil {
		return nil, t, err
	}
	return res, t, nil
}

// bootTimeout bounds one boot: TCG boots take seconds on a busy host.
func bootTimeout(a vmpool.Accel) time.Duration {
	if a == vmpool.AccelKVM {
		return 15 * time.Second
	}
	return 60 * time.Second
}

// printResult writes the result to stdout and everything else to stderr.
func printResult(id string, res *vmpool.Result, t localTimings, verbose bool, stdout, stderr io.Writer) error {
	if verbose {
		fmt.Fprintf(stderr, "id: %s\naccel: %s\nboot: %s  run: %s  total: %s (in guest: unpack %.1f ms, lua %.1f ms)\nreason: %s\n",
			id, t.accel, t.boot.Round(time.Millisecond), t.run.Round(time.Millisecond), t.total.Round(time.Millisecond),
			res.UnpackMillis, res.RunMillis, res.Reason)
	}
	return printOutcome(invokeapi.RunResponse{Reason: string(res.Reason), Result: res.Value, Error: res.Error, Traceback: res.Traceback}, stdout)
}

// randomID returns a new invocation id: 26 random characters of A-Z and
// 2-7 (128 bits), within the id rule. It is random, not derived from the
// job, so that it says nothing about the code or the arguments and nobody
// can take it before the run does.
func randomID() string {
	return rand.Text()
}

// validProfile reports whether name can be a server's profile: it becomes
// part of a URL path.
func validProfile(name string) bool {
	if name == "" || len(name) > 32 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
