package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/coder/websocket"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
	"github.com/lualambda/caddy-lualambda/invokeapi"
	"github.com/lualambda/caddy-lualambda/vmpool"
)

// detachKey is Ctrl-]: it leaves a session without ending it.
const detachKey = 0x1d

func newAttachCommand() *cobra.Command {
	var server, token string
	cmd := &cobra.Command{
		Use:   "attach ID",
		Short: "Join a running LuaJIT session (Ctrl-] detaches)",
		Long: `Join a running LuaJIT session started with 'lualambda invoke --attach'.
Everyone attached sees the same terminal and may type. Ctrl-] detaches and
leaves the session running; attach again to see its recent output. The token
comes from --token or the CLI's record of the sessions it started.`,
		Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			base := serverURL(server)
			token, err := tokenFor(base, args[0], token)
			if err != nil {
				return err
			}
			return attachRemote(cmd.Context(), base, args[0], token, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "the API's URL (default $LUALAMBDA_SERVER, else "+defaultServer+")")
	cmd.Flags().StringVar(&token, "token", "", "the session's token")
	return cmd
}

// rawTerminal puts stdin in raw mode when it is a terminal and returns the
// function that restores it.
func rawTerminal(stdin io.Reader) func() {
	f, ok := stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	state, err := term.MakeRaw(int(f.Fd()))
	if err != nil {
		return func() {}
	}
	return func() { _ = term.Restore(int(f.Fd()), state) }
}

// terminalSize returns stdout's size, or 0, 0.
func terminalSize(stdout io.Writer) (int, int) {
	if f, ok := stdout.(*os.File); ok {
		if cols, rows, err := term.GetSize(int(f.Fd())); err == nil {
			return rows, cols
		}
	}
	return 0, 0
}

// pumpKeys copies stdin to send until Ctrl-] or EOF; it reports which.
func pumpKeys(stdin io.Reader, send func([]byte) error) (detached bool) {
	buf := make([]byte, 1024)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if i := bytes.IndexByte(chunk, detachKey); i >= 0 {
				if i > 0 {
					_ = send(chunk[:i])
				}
				return true
			}
			if send(chunk) != nil {
				return false
			}
		}
		if err != nil {
			return false
		}
	}
}

// attachRemote joins a session over the server's WebSocket.
func attachRemote(ctx context.Context, base, id, token string, stdin io.Reader, stdout, stderr io.Writer) error {
	wsURL := invokeapi.AttachPath(strings.Replace(strings.Replace(base, "https://", "wss://", 1), "http://", "ws://", 1), id)
	conn, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}},
	})
	if err != nil {
		if resp != nil {
			var e invokeapi.Error
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = json.Unmarshal(body, &e)
			return &exitError{code: 1, msg: fmt.Sprintf("attach %s: server answered %d: %s", id, resp.StatusCode, e.Error)}
		}
		return fmt.Errorf("attach %s: %w", id, err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	restore := rawTerminal(stdin)
	defer restore()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sendResize := func() {
		if rows, cols := terminalSize(stdout); rows > 0 {
			msg, _ := json.Marshal(invokeapi.AttachMessage{Type: invokeapi.AttachResize, Rows: rows, Cols: cols})
			_ = conn.Write(ctx, websocket.MessageText, msg)
		}
	}
	sendResize()
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	go func() {
		for {
			select {
			case <-winch:
				sendResize()
			case <-ctx.Done():
				return
			}
		}
	}()
	detached := make(chan struct{})
	go func() {
		if pumpKeys(stdin, func(b []byte) error { return conn.Write(ctx, websocket.MessageBinary, b) }) {
			close(detached)
		}
	}()
	type message struct {
		typ  websocket.MessageType
		data []byte
		err  error
	}
	msgs := make(chan message)
	go func() {
		for {
			typ, data, err := conn.Read(ctx)
			select {
			case msgs <- message{typ, data, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		select {
		case <-detached:
			conn.Close(websocket.StatusNormalClosure, "detached")
			restore()
			fmt.Fprintf(stderr, "\r\n[detached from %s; it keeps running: lualambda attach %s]\r\n", id, id)
			return nil
		case m := <-msgs:
			if m.err != nil {
				restore()
				if websocket.CloseStatus(m.err) == websocket.StatusNormalClosure {
					return nil
				}
				return fmt.Errorf("session %s: %w", id, m.err)
			}
			if m.typ == websocket.MessageBinary {
				_, _ = stdout.Write(m.data)
				continue
			}
			var ctl invokeapi.AttachMessage
			if json.Unmarshal(m.data, &ctl) == nil && ctl.Type == invokeapi.AttachEnd {
				restore()
				fmt.Fprintf(stderr, "\r\n[session %s ended: %s]\r\n", id, endText(ctl.Reason, ctl.Error))
				return nil
			}
		}
	}
}

// startRemoteSession POSTs ?mode=session and returns the session's token.
func startRemoteSession(ctx context.Context, o invokeOptions, id string, job *loadedJob, stdout io.Writer) (string, error) {
	base := serverURL(o.server)
	rows, cols := terminalSize(stdout)
	url := fmt.Sprintf("%s?%s=%s&%s=%d&%s=%d", invokeapi.RunPath(base, id, o.profile),
		invokeapi.ModeParam, invokeapi.ModeSession, invokeapi.RowsParam, rows, invokeapi.ColsParam, cols)
	var body io.Reader
	ct := ""
	if job != nil {
		c, b, err := runRequestBody(job)
		if err != nil {
			return "", err
		}
		ct, body = c, bytes.NewReader(b)
	}
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		return "", usageErrorf("bad server URL %q: %v", base, err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	pc, err := o.pay.client()
	if err != nil {
		return "", err
	}
	var start invokeapi.SessionStart
	if _, _, err := callPaid(ctx, pc, req, &start); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusConflict {
			return "", &exitError{code: 1, msg: fmt.Sprintf("id %s is already used: attach to it with 'lualambda attach %s', or pass --id", id, id)}
		}
		return "", err
	}
	if err := saveToken(ctx, base, id, start.Token); err != nil {
		return "", err
	}
	return start.Token, nil
}

// attachLocal runs a session in a local VM wired to this terminal; Ctrl-]
// ends it (there is nothing to come back to).
func attachLocal(ctx context.Context, o invokeOptions, accel vmpool.Accel, job *loadedJob, stdin io.Reader, stdout, stderr io.Writer) error {
	vm, err := bootLocal(ctx, o, accel, stderr)
	if err != nil {
		return err
	}
	// The session ends its VM in the background; wait for it here, so that
	// QEMU is gone and its directory removed before the CLI exits.
	defer vm.Close()
	rows, cols := terminalSize(stdout)
	limits := vmpool.LimitsFor(o.memory+vmpool.GuestOverheadMiB, o.timeout, o.outputCap)
	sess, err := vm.StartSession(ctx, vmpool.Job{Source: job.source, Require: job.require, Packages: job.pkgs, Limits: limits, Runtime: o.runtime}, rows, cols,
		func(_ protocol.Stream, b []byte) { _, _ = stdout.Write(b) })
	if err != nil {
		return err
	}
	restore := rawTerminal(stdin)
	defer restore()
	userEnded := make(chan struct{})
	go func() {
		if pumpKeys(stdin, sess.Input) {
			close(userEnded)
			sess.End()
		}
	}()
	select {
	case <-sess.Done():
	case <-ctx.Done():
		sess.End()
	}
	restore()
	res := sess.Result()
	fmt.Fprintf(stderr, "\r\n[session ended: %s]\r\n", localEnd(ctx, res, userEnded))
	if res.Reason == vmpool.ReasonEnded && ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// localEnd says how a local session ended, in the user's terms: a session
// the user ended with Ctrl-] (or a signal) is no crash.
func localEnd(ctx context.Context, res *vmpool.Result, userEnded <-chan struct{}) string {
	if res.Reason == vmpool.ReasonEnded {
		select {
		case <-userEnded:
			return "you ended it (Ctrl-])"
		default:
		}
		if ctx.Err() != nil {
			return "interrupted"
		}
	}
	return endText(string(res.Reason), res.Error)
}

// endText is a session's reason followed by its error, if any.
func endText(reason, msg string) string {
	if msg == "" {
		return reason
	}
	return reason + " " + msg
}
