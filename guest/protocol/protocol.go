// Package protocol defines the wire protocol spoken between the host and the
// guest agent over the VM's virtio-serial port.
//
// Every message is a frame: a 4-byte big-endian length, a 1-byte frame type,
// and a payload of length-1 bytes. Lengths are bounded on both sides, and a
// frame that is too large, empty, or of an unknown type ends the session.
//
// A session runs in this order:
//
//	guest → host  Hello      the agent is up and waits (a snapshot may be taken here)
//	host → guest  Handshake  per-VM token, fresh entropy, wall-clock time
//	guest → host  Ready      the token echoed back, proving the agent read the handshake
//	host → guest  Warm       optional: run a throwaway job so that code paths are
//	guest → host  Warmed     translated (TCG) and cached before the real job comes
//	host → guest  Job        the job spec and its package zips, fresh entropy, the time
//	guest → host  Output*    captured stdout/stderr, streamed as it is produced
//	guest → host  Result     the outcome; the agent then powers the VM off
//
// A snapshot clone may wait in a pool for a long time after its handshake,
// its clock drifting under emulation, so the host sends fresh entropy and its
// wall-clock time again with the Job (and with Warm, so that the warm-up
// takes the same path), and the agent mixes the entropy into the kernel's
// pool and sets the clock before user code runs.
//
// Either side may send Error with a message and then stop.
package protocol

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the protocol version. The agent reports it in Hello and the host
// refuses an agent that speaks another one.
// Version 2 added the entropy and time to Job and Warm.
const Version = 2

// MaxFrame bounds the payload of any single frame (64 MiB), so neither side
// can be made to allocate without limit.
const MaxFrame = 64 << 20

// MaxControlFrame bounds frames that carry only control data (everything but
// Job and Result).
const MaxControlFrame = 1 << 20

// FrameType identifies the meaning of a frame's payload.
type FrameType uint8

// The frame types, in the order a session uses them.
const (
	FrameHello     FrameType = 1
	FrameHandshake FrameType = 2
	FrameReady     FrameType = 3
	FrameJob       FrameType = 4
	FrameOutput    FrameType = 5
	FrameResult    FrameType = 6
	FrameError     FrameType = 7
	FrameWarm      FrameType = 8
	FrameWarmed    FrameType = 9
	// FrameInput carries keyboard input to a session's terminal.
	FrameInput FrameType = 10
	// FrameResize carries a session terminal's new size (JSON Resize).
	FrameResize FrameType = 11
)

// String names a frame type for logs and errors.
func (t FrameType) String() string {
	switch t {
	case FrameHello:
		return "hello"
	case FrameHandshake:
		return "handshake"
	case FrameReady:
		return "ready"
	case FrameJob:
		return "job"
	case FrameOutput:
		return "output"
	case FrameResult:
		return "result"
	case FrameError:
		return "error"
	case FrameWarm:
		return "warm"
	case FrameWarmed:
		return "warmed"
	case FrameInput:
		return "input"
	case FrameResize:
		return "resize"
	}
	return fmt.Sprintf("frame(%d)", uint8(t))
}

// ErrFrameTooLarge is returned when a frame's declared length exceeds the
// reader's bound.
var ErrFrameTooLarge = errors.New("frame too large")

// WriteFrame writes one frame with the given type and payload.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	if len(payload)+1 > MaxFrame {
		return fmt.Errorf("write %s frame: %w (%d bytes)", t, ErrFrameTooLarge, len(payload))
	}
	buf := make([]byte, 5+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(len(payload)+1))
	buf[4] = byte(t)
	copy(buf[5:], payload)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write %s frame: %w", t, err)
	}
	return nil
}

// WriteJSON writes one frame whose payload is v encoded as JSON.
func WriteJSON(w io.Writer, t FrameType, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s frame: %w", t, err)
	}
	return WriteFrame(w, t, payload)
}

// ReadFrame reads one frame, refusing payloads larger than limit bytes.
func ReadFrame(r io.Reader, limit int) (FrameType, []byte, error) {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, nil, fmt.Errorf("read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(head[:4])
	t := FrameType(head[4])
	if n == 0 {
		return 0, nil, errors.New("read frame: zero length")
	}
	if t < FrameHello || t > FrameResize {
		return 0, nil, fmt.Errorf("read frame: unknown type %d", head[4])
	}
	size := int64(n) - 1
	if size > int64(limit) || size > MaxFrame {
		return t, nil, fmt.Errorf("read %s frame of %d bytes: %w", t, size, ErrFrameTooLarge)
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return t, nil, fmt.Errorf("read %s frame payload: %w", t, err)
	}
	return t, payload, nil
}

// Hello is the agent's first frame after boot.
type Hello struct {
	Version int `json:"version"`
	// BootMillis is the guest's CLOCK_BOOTTIME when the agent became ready.
	BootMillis int64 `json:"boot_ms"`
}

// Handshake is the host's first frame to a VM. It binds the VM to a token and
// gives it fresh entropy and the time, which matter for snapshot clones that
// would otherwise share the template's RNG state and clock.
type Handshake struct {
	Version   int    `json:"version"`
	Token     string `json:"token"`
	Entropy   []byte `json:"entropy"`
	UnixNanos int64  `json:"unix_nanos"`
}

// Warm is the payload of a Warm frame: the warm-up job gets entropy and the
// time like a real job, so that it exercises the same code. An empty payload
// means none.
type Warm struct {
	Entropy   []byte `json:"entropy,omitempty"`
	UnixNanos int64  `json:"unix_nanos,omitempty"`
}

// Ready answers a Handshake.
type Ready struct {
	Token string `json:"token"`
}

// Limits are the per-job limits the agent enforces inside the guest. The host
// enforces the wall clock and output cap again from outside.
type Limits struct {
	// WallMillis is the time the Lua process may run.
	WallMillis int64 `json:"wall_ms"`
	// CPUSeconds is the Lua process's RLIMIT_CPU.
	CPUSeconds int64 `json:"cpu_s"`
	// MemoryBytes is the Lua process's RLIMIT_AS; 0 leaves the agent's default.
	MemoryBytes int64 `json:"memory_bytes"`
	// OutputBytes caps stdout and stderr together.
	OutputBytes int64 `json:"output_bytes"`
	// ResultBytes caps the JSON result.
	ResultBytes int64 `json:"result_bytes"`
	// PackageBytes caps the unpacked size of all packages together.
	PackageBytes int64 `json:"package_bytes"`
	// PackageFiles caps the number of entries across all packages.
	PackageFiles int `json:"package_files"`
}

// PackageHeader names and sizes one zip archive attached to a job. Its bytes follow the job
// header in the Job frame, in order.
type PackageHeader struct {
	// Name is the archive's stem: "blah" for blah.zip.
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// The runtimes a Job may name. An empty Runtime is RuntimeLuaJIT.
const (
	// RuntimeLuaJIT is LuaJIT 2.1 (Lua 5.1 with some 5.2 features), the default.
	RuntimeLuaJIT = "luajit"
	// RuntimeLua54 is Debian's Lua 5.4 (integers, //, utf8).
	RuntimeLua54 = "lua5.4"
)

// Job is the header of a Job frame.
type Job struct {
	// Runtime names the Lua interpreter: "" or RuntimeLuaJIT, or RuntimeLua54.
	Runtime string `json:"runtime,omitempty"`
	// Source is Lua text to run; empty when Require names the entry module.
	Source string `json:"source,omitempty"`
	// Require is the dotted module to run, such as "blah.dorp".
	Require string `json:"require,omitempty"`
	// Args are JSON values handed to the Lua code.
	Args     []json.RawMessage `json:"args,omitempty"`
	Packages []PackageHeader   `json:"packages,omitempty"`
	Limits   Limits            `json:"limits"`
	// Seed seeds Lua's math.random.
	Seed int64 `json:"seed"`
	// Session runs an interactive Lua (of Runtime) under a terminal instead of a
	// one-shot job: Source (or Require) runs first, packages are on the path.
	Session bool `json:"session,omitempty"`
	// Rows and Cols are a session terminal's first size.
	Rows int `json:"rows,omitempty"`
	Cols int `json:"cols,omitempty"`
	// Entropy is fresh randomness from the host, mixed into the guest
	// kernel's pool (and the pool reseeded) before user code runs.
	Entropy []byte `json:"entropy,omitempty"`
	// UnixNanos is the host's wall-clock time when it sent the job; the
	// agent sets the guest's clock to it before user code runs. Zero leaves
	// the clock alone.
	UnixNanos int64 `json:"unix_nanos,omitempty"`
}

// Resize is the payload of a Resize frame.
type Resize struct {
	Rows int `json:"rows"`
	Cols int `json:"cols"`
}

// Stream identifies an output stream in an Output frame's first byte.
type Stream byte

// The output streams of the Lua process.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

// Reason says how a run ended.
type Reason string

// The reasons a run can end with.
const (
	// ReasonOK: the Lua code returned and its result was encoded.
	ReasonOK Reason = "ok"
	// ReasonError: the Lua code raised an error, did not compile, its
	// result could not be encoded, or its packages were refused.
	ReasonError Reason = "error"
	// ReasonTimeout: the run reached its wall-clock or CPU time limit.
	ReasonTimeout Reason = "timeout"
	// ReasonMemory: the run reached its memory limit.
	ReasonMemory Reason = "memory"
	// ReasonOutputCap: stdout and stderr together reached the output cap.
	ReasonOutputCap Reason = "output_cap"
	// ReasonExit: the Lua process ended itself without a result (os.exit,
	// a signal it sent itself, a fault through the FFI). The user's doing.
	ReasonExit Reason = "exit"
	// ReasonCrash: the VM or the host failed (QEMU ended, the agent broke
	// the protocol); never the Lua code's own doing.
	ReasonCrash Reason = "crash"
)

// Reasons lists every valid reason.
func Reasons() []Reason {
	return []Reason{ReasonOK, ReasonError, ReasonTimeout, ReasonMemory, ReasonOutputCap, ReasonExit, ReasonCrash}
}

// Valid reports whether r is one of Reasons. A reason read from a guest is
// untrusted: map an invalid one to a fixed label before using it.
func (r Reason) Valid() bool {
	switch r {
	case ReasonOK, ReasonError, ReasonTimeout, ReasonMemory, ReasonOutputCap, ReasonExit, ReasonCrash:
		return true
	}
	return false
}

// Result is the agent's last frame.
type Result struct {
	Reason Reason `json:"reason"`
	// Value is the JSON encoding of the Lua result when Reason is ok.
	Value json.RawMessage `json:"value,omitempty"`
	// Error is the Lua error message (or the agent's explanation).
	Error     string `json:"error,omitempty"`
	Traceback string `json:"traceback,omitempty"`
	// OutputBytes counts the bytes of stdout and stderr the Lua process wrote,
	// including any cut at the cap.
	OutputBytes int64 `json:"output_bytes"`
	// UnpackMillis and RunMillis time the job inside the guest.
	UnpackMillis float64 `json:"unpack_ms"`
	RunMillis    float64 `json:"run_ms"`
	// AgentMillis is the agent's time from the job's arrival to the result.
	AgentMillis float64 `json:"agent_ms"`
	Token       string  `json:"token"`
}

// ErrorMessage is the payload of an Error frame.
type ErrorMessage struct {
	Message string `json:"message"`
}

// EncodeJob builds a Job frame payload: a 4-byte big-endian header length,
// the JSON header, then each package's bytes in order.
func EncodeJob(job Job, zips [][]byte) ([]byte, error) {
	if len(zips) != len(job.Packages) {
		return nil, fmt.Errorf("encode job: %d packages declared, %d given", len(job.Packages), len(zips))
	}
	for i := range zips {
		job.Packages[i].Size = int64(len(zips[i]))
	}
	head, err := json.Marshal(job)
	if err != nil {
		return nil, fmt.Errorf("encode job header: %w", err)
	}
	size := 4 + len(head)
	for _, z := range zips {
		size += len(z)
	}
	if size+1 > MaxFrame {
		return nil, fmt.Errorf("encode job: %w (%d bytes)", ErrFrameTooLarge, size)
	}
	buf := make([]byte, 4, size)
	binary.BigEndian.PutUint32(buf, uint32(len(head)))
	buf = append(buf, head...)
	for _, z := range zips {
		buf = append(buf, z...)
	}
	return buf, nil
}

// DecodeJob parses a Job frame payload into its header and package bytes.
// The returned slices alias payload.
func DecodeJob(payload []byte) (Job, [][]byte, error) {
	var job Job
	if len(payload) < 4 {
		return job, nil, errors.New("decode job: payload too short")
	}
	n := int64(binary.BigEndian.Uint32(payload))
	if n > int64(len(payload)-4) {
		return job, nil, errors.New("decode job: header length exceeds payload")
	}
	if err := json.Unmarshal(payload[4:4+n], &job); err != nil {
		return job, nil, fmt.Errorf("decode job header: %w", err)
	}
	rest := payload[4+n:]
	zips := make([][]byte, len(job.Packages))
	for i, p := range job.Packages {
		if p.Size < 0 || p.Size > int64(len(rest)) {
			return job, nil, fmt.Errorf("decode job: package %q size %d exceeds the frame", p.Name, p.Size)
		}
		zips[i] = rest[:p.Size:p.Size]
		rest = rest[p.Size:]
	}
	if len(rest) != 0 {
		return job, nil, fmt.Errorf("decode job: %d trailing bytes", len(rest))
	}
	return job, zips, nil
}
