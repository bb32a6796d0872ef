package vmpool

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// qmpClient speaks QEMU's machine protocol over a unix socket: one command
// at a time, asynchronous events skipped.
type qmpClient struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialQMP connects to a QMP socket, retrying until QEMU has created it, and
// negotiates capabilities.
func dialQMP(ctx context.Context, path string) (*qmpClient, error) {
	var conn net.Conn
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to qmp: %w (%v)", ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	q := &qmpClient{conn: conn, r: bufio.NewReader(conn)}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := q.readLine(); err != nil { // the greeting
		conn.Close()
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if _, err := q.execute(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// maxQMPLine bounds one line from QEMU's monitor. Its replies are small
// (the largest this client asks for, query-migrate, is under 4 KiB); a QEMU
// that a guest took over must not make Caddy buffer without end.
const maxQMPLine = 1 << 20

// errQMPLineTooLong is returned for a monitor line over maxQMPLine.
var errQMPLineTooLong = errors.New("qmp: a line from QEMU exceeds 1 MiB")

// readLine reads one line from the monitor, up to maxQMPLine bytes.
func (q *qmpClient) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, err := q.r.ReadSlice('\n')
		if len(line)+len(chunk) > maxQMPLine {
			return nil, errQMPLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return nil, err
		}
	}
}

// execute runs one command and returns its "return" value.
func (q *qmpClient) execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	stop := context.AfterFunc(ctx, func() { _ = q.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		line, err := q.readLine()
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: bad reply: %w", command, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s: %s", command, resp.Error.Class, resp.Error.Desc)
		default:
			return resp.Return, nil
		}
	}
}

// waitMigration polls query-migrate until the outgoing migration completes.
func (q *qmpClient) waitMigration(ctx context.Context) error {
	for {
		ret, err := q.execute(ctx, "query-migrate", nil)
		if err != nil {
			return err
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(ret, &st); err != nil {
			return fmt.Errorf("query-migrate: %w", err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (q *qmpClient) close() error {
	if q == nil {
		return errors.New("qmp: not connected")
	}
	return q.conn.Close()
}
