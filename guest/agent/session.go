//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
)

// runSession runs an interactive Lua (LuaJIT, or Lua 5.4 when the job's
// runtime says so) under a pseudo-terminal, as the unprivileged user, with
// the job's packages on the module path. Input and
// resize frames from the host go to the terminal; what the terminal shows
// goes back as output frames. The session ends when the REPL exits, the
// wall clock runs out or the output cap is reached.
func runSession(c *conn, job protocol.Job) protocol.Result {
	if err := mountDevpts(); err != nil {
		return protocol.Result{Reason: protocol.ReasonCrash, Error: err.Error()}
	}
	args := []string{"-i"}
	if job.Require != "" {
		args = []string{"-l", job.Require, "-i"}
	}
	if job.Source != "" {
		main := jobDir + "/main.lua"
		if err := os.WriteFile(main, []byte(job.Source), 0o644); err != nil {
			return protocol.Result{Reason: protocol.ReasonCrash, Error: "write session source: " + err.Error()}
		}
		args = append(args, main)
	}
	binary, err := binaryFor(job.Runtime)
	if err != nil {
		return protocol.Result{Reason: protocol.ReasonError, Error: err.Error()}
	}
	cmd := exec.Command(binary, args...)
	cmd.Dir = jobDir
	cmd.Env = []string{
		"PATH=/usr/bin:/bin", "HOME=" + jobDir, "TMPDIR=/tmp", "LANG=C.UTF-8", "TERM=xterm-256color",
		"LUA_PATH=" + pkgDir + "/?.lua;" + pkgDir + "/?/init.lua;;",
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid: true, Setctty: true,
		Credential: &syscall.Credential{Uid: userID, Gid: userID, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	size := &pty.Winsize{Rows: uint16(max(job.Rows, 24)), Cols: uint16(max(job.Cols, 80))}
	lim := job.Limits
	fileBytes := lim.PackageBytes
	if fileBytes <= 0 {
		fileBytes = defaultFileBytes
	}
	// The REPL runs in the same sandbox as a job's Lua process, its limits
	// set before it starts.
	var tty *os.File
	err = startSandboxed(cmd, sandboxLimits{FileBytes: fileBytes, MemoryBytes: lim.MemoryBytes}, func(cmd *exec.Cmd) error {
		var err error
		tty, err = pty.StartWithSize(cmd, size)
		return err
	})
	if err != nil {
		if tty != nil {
			tty.Close()
		}
		return protocol.Result{Reason: protocol.ReasonCrash, Error: "start the REPL: " + err.Error()}
	}
	pid := cmd.Process.Pid

	start := time.Now()
	var total int64
	capped := make(chan struct{})
	outputDone := make(chan struct{})
	go func() {
		defer close(outputDone)
		buf := make([]byte, 16<<10)
		for {
			n, err := tty.Read(buf)
			if n > 0 {
				chunk := buf[:n]
				if lim.OutputBytes > 0 && total+int64(n) > lim.OutputBytes {
					chunk = buf[:max(0, lim.OutputBytes-total)]
				}
				total += int64(n)
				if len(chunk) > 0 {
					payload := append([]byte{byte(protocol.Stdout)}, chunk...)
					_ = c.write(protocol.FrameOutput, payload)
				}
				if lim.OutputBytes > 0 && total > lim.OutputBytes {
					close(capped)
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	// Input and resizes from the host, until the agent powers off.
	go func() {
		for {
			t, payload, err := protocol.ReadFrame(c.r, protocol.MaxControlFrame)
			if err != nil {
				return
			}
			switch t {
			case protocol.FrameInput:
				_, _ = tty.Write(payload)
			case protocol.FrameResize:
				var rs protocol.Resize
				if json.Unmarshal(payload, &rs) == nil && rs.Rows > 0 && rs.Cols > 0 {
					_ = pty.Setsize(tty, &pty.Winsize{Rows: uint16(rs.Rows), Cols: uint16(rs.Cols)})
				}
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	wall := time.Duration(lim.WallMillis) * time.Millisecond
	if wall <= 0 {
		wall = 24 * time.Hour
	}
	res := protocol.Result{}
	select {
	case err := <-exited:
		// Let the last output reach the host before the result.
		select {
		case <-outputDone:
		case <-time.After(time.Second):
		}
		res.Reason = protocol.ReasonOK
		if err != nil {
			res.Error = "the REPL ended: " + err.Error()
		}
	case <-capped:
		res.Reason = protocol.ReasonOutputCap
		res.Error = fmt.Sprintf("the session's output exceeded the cap of %d bytes", lim.OutputBytes)
	case <-time.After(wall):
		res.Reason = protocol.ReasonTimeout
		res.Error = fmt.Sprintf("the session reached its wall-clock limit of %s", wall)
	}
	_ = unix.Kill(-pid, unix.SIGKILL)
	res.OutputBytes = total
	res.RunMillis = float64(time.Since(start).Microseconds()) / 1000
	return res
}

// mountDevpts mounts the pseudo-terminal file system sessions need.
func mountDevpts() error {
	if err := os.MkdirAll("/dev/pts", 0o755); err != nil {
		return fmt.Errorf("mkdir /dev/pts: %w", err)
	}
	if err := unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "ptmxmode=0666,mode=0620"); err != nil && err != unix.EBUSY {
		return fmt.Errorf("mount devpts: %w", err)
	}
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		if err := os.Symlink("pts/ptmx", "/dev/ptmx"); err != nil {
			return fmt.Errorf("link /dev/ptmx: %w", err)
		}
	}
	return nil
}
