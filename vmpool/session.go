package vmpool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
)

// ReasonEnded is how a session ends when End ends it, or when the context
// given to StartSession does: on purpose, by its user or its host, and not a
// crash. It is the host's word, never a guest's (guests report only the
// protocol's reasons).
const ReasonEnded protocol.Reason = "ended"

// Session is an interactive LuaJIT running under a terminal in a VM. Its
// output goes to the OutputFunc given to StartSession; Input and Resize
// reach the terminal. The VM is destroyed when the session ends.
type Session struct {
	vm   *VM
	mu   sync.Mutex // serialises frames to the guest
	done chan struct{}
	res  *Result
	// ending is set by End before it ends the VM, so that the VM's end
	// reads as the session being ended rather than as a crash.
	ending atomic.Bool
}

// StartSession sends a session job and returns at once. onOutput receives
// what the terminal shows, cut at the job's output cap. The session ends
// when the REPL exits, at the job's wall-clock limit (enforced here too),
// at the output cap, or when ctx ends.
func (vm *VM) StartSession(ctx context.Context, job Job, rows, cols int, onOutput OutputFunc) (*Session, error) {
	if vm.used {
		return nil, errors.New("vm already used")
	}
	vm.used = true
	payload, err := job.encode(protocol.Job{Session: true, Rows: rows, Cols: cols})
	if err != nil {
		vm.Close()
		return nil, err
	}
	_ = vm.conn.SetDeadline(time.Time{})
	if err := protocol.WriteFrame(vm.conn, protocol.FrameJob, payload); err != nil {
		vm.Close()
		return nil, fmt.Errorf("start session: %w", err)
	}
	s := &Session{vm: vm, done: make(chan struct{})}
	wall := time.Duration(job.Limits.WallMillis) * time.Millisecond
	sctx := ctx
	cancel := func() {}
	if wall > 0 {
		sctx, cancel = context.WithTimeout(ctx, wall+hostMargin)
	}
	go func() {
		defer cancel()
		s.read(sctx, job.Limits.OutputBytes, wall, onOutput)
	}()
	return s, nil
}

// read relays output until the result comes or the session is cut off.
func (s *Session) read(ctx context.Context, outputCap int64, wall time.Duration, onOutput OutputFunc) {
	defer close(s.done)
	defer func() { go s.vm.Close() }()
	start := time.Now()
	stop := context.AfterFunc(ctx, func() { s.vm.conn.Close() })
	defer stop()
	res := &Result{}
	var seen int64
	for {
		t, payload, err := s.vm.readFrame(protocol.MaxFrame)
		if err != nil {
			switch {
			case s.ending.Load():
				res.Reason = ReasonEnded
				res.Error = "the session was ended"
			case ctx.Err() == context.DeadlineExceeded:
				res.Reason = protocol.ReasonTimeout
				res.Error = fmt.Sprintf("the session reached its wall-clock limit of %s", wall)
			case ctx.Err() != nil:
				res.Reason = ReasonEnded
				res.Error = "the session was ended"
			default:
				res.Reason = protocol.ReasonCrash
				res.Error = "the VM ended during the session: " + err.Error()
			}
			break
		}
		if t == protocol.FrameOutput && len(payload) > 0 {
			data := payload[1:]
			if outputCap > 0 && seen+int64(len(data)) > outputCap {
				data = data[:max(0, outputCap-seen)]
			}
			seen += int64(len(data))
			if len(data) > 0 && onOutput != nil {
				onOutput(protocol.Stream(payload[0]), data)
			}
			continue
		}
		if t == protocol.FrameResult {
			var r protocol.Result
			if err := json.Unmarshal(payload, &r); err != nil {
				res.Reason, res.Error = protocol.ReasonCrash, "bad result: "+err.Error()
			} else {
				res.Reason, res.Error = r.Reason, r.Error
			}
			break
		}
	}
	res.OutputBytes = seen
	res.TotalMillis = float64(time.Since(start).Microseconds()) / 1000
	s.res = res
}

// Input types into the session's terminal.
func (s *Session) Input(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return protocol.WriteFrame(s.vm.conn, protocol.FrameInput, b)
}

// Resize changes the session terminal's size.
func (s *Session) Resize(rows, cols int) error {
	b, _ := json.Marshal(protocol.Resize{Rows: rows, Cols: cols})
	s.mu.Lock()
	defer s.mu.Unlock()
	return protocol.WriteFrame(s.vm.conn, protocol.FrameResize, b)
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Result is how the session ended; valid after Done.
func (s *Session) Result() *Result {
	<-s.done
	return s.res
}

// End stops the session now, ending its VM. The session's reason is then
// ReasonEnded, unless it had already ended otherwise.
func (s *Session) End() {
	s.ending.Store(true)
	s.vm.Close()
	<-s.done
}
