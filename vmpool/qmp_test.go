package vmpool

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestQMPBoundsALine: a QEMU that a guest took over answers a command with
// one endless line; the client gives up at the bound instead of buffering
// it all.
func TestQMPBoundsALine(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const flood = 64 << 20
	sent := make(chan int, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
		buf := make([]byte, 4096)
		n, _ := c.Read(buf) // qmp_capabilities
		if !bytes.Contains(buf[:n], []byte("qmp_capabilities")) {
			return
		}
		_, _ = c.Write([]byte(`{"return": {}}` + "\n"))
		_, _ = c.Read(buf) // the next command
		chunk := bytes.Repeat([]byte("x"), 1<<16)
		total := 0
		_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		for total < flood {
			n, err := c.Write(chunk)
			total += n
			if err != nil {
				break
			}
		}
		sent <- total
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := dialQMP(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = q.execute(ctx, "query-status", nil)
	runtime.ReadMemStats(&after)
	q.close()
	if !errors.Is(err, errQMPLineTooLong) {
		t.Fatalf("an endless line: %v, want %v", err, errQMPLineTooLong)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Fatalf("reading it allocated %d MiB", grew>>20)
	}
	if total := <-sent; total >= flood {
		t.Fatalf("the client read all %d MiB", total>>20)
	}
}
