package measure

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Workload is a Lua CPU benchmark: a body that computes a check value, timed
// with os.clock around it, so that process start-up is not counted.
type Workload struct {
	// Name identifies the workload in reports: fib, string, table.
	Name string
	// Body is Lua statements that end with `return <check>`; the check is
	// converted with tostring and must be the same in the guest and on the
	// host.
	Body string
}

// Workloads are the standard Lua CPU workloads.
func Workloads() []Workload {
	return []Workload{
		{Name: "fib", Body: `
local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
return fib(32)`},
		{Name: "string", Body: `
local parts = {}
for i = 1, 100000 do parts[#parts + 1] = "item" .. i end
local s = table.concat(parts, ",")
local replaced, n = s:gsub("item(%d+)", "%1x")
local up = replaced:upper()
local words = 0
for _ in up:gmatch("[^,]+") do words = words + 1 end
return #up .. ":" .. n .. ":" .. words`},
		{Name: "table", Body: `
local t, x = {}, 12345
for i = 1, 200000 do x = (x * 16807) % 2147483647; t[i] = x end
table.sort(t)
local sum = 0
for i, v in ipairs(t) do if i % 3 == 0 then sum = (sum + v) % 1000000007 end end
local m = {}
for i = 1, 200000 do local k = "k" .. (i % 5000) m[k] = (m[k] or 0) + 1 end
local keys = 0
for _ in pairs(m) do keys = keys + 1 end
return sum .. ":" .. keys`},
	}
}

// wrap puts the body in a function and times its call.
func (w Workload) wrap(tail string) string {
	return "local function work()\n" + w.Body + "\nend\n" +
		"local t0 = os.clock()\nlocal check = tostring(work())\nlocal s = os.clock() - t0\n" + tail
}

// GuestSource is the Lua to run in the guest: it returns {s = seconds,
// check = check}.
func (w Workload) GuestSource() string {
	return w.wrap("return {s = s, check = check}")
}

// HostSource is the Lua for the host's luajit: it prints "seconds check".
func (w Workload) HostSource() string {
	return w.wrap(`io.write(string.format("%.9f %s", s, check))`)
}

// GuestTiming is what GuestSource returns.
type GuestTiming struct {
	Seconds float64 `json:"s"`
	Check   string  `json:"check"`
}

// ParseGuestResult decodes the JSON result of GuestSource.
func ParseGuestResult(v json.RawMessage) (GuestTiming, error) {
	var g GuestTiming
	if err := json.Unmarshal(v, &g); err != nil {
		return GuestTiming{}, fmt.Errorf("guest timing %s: %w", v, err)
	}
	if g.Check == "" || g.Seconds <= 0 {
		return GuestTiming{}, fmt.Errorf("guest timing %s: missing time or check", v)
	}
	return g, nil
}

// HostLuaJIT runs the workload with luajit from PATH and returns its CPU
// time and check value.
func HostLuaJIT(ctx context.Context, w Workload) (time.Duration, string, error) {
	path, err := exec.LookPath("luajit")
	if err != nil {
		return 0, "", fmt.Errorf("host luajit: %w (install the luajit package)", err)
	}
	out, err := exec.CommandContext(ctx, path, "-e", w.HostSource()).Output()
	if err != nil {
		return 0, "", fmt.Errorf("host luajit %s: %w", w.Name, err)
	}
	secs, check, ok := strings.Cut(strings.TrimSpace(string(out)), " ")
	s, perr := strconv.ParseFloat(secs, 64)
	if !ok || perr != nil || s <= 0 {
		return 0, "", fmt.Errorf("host luajit %s: unexpected output %q", w.Name, out)
	}
	return time.Duration(s * float64(time.Second)), check, nil
}
