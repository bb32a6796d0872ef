package vmpool

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
)

func TestCapResult(t *testing.T) {
	r := &Result{Reason: protocol.ReasonOK, Value: []byte(`"` + strings.Repeat("x", 100) + `"`)}
	capResult(r, 50)
	if r.Reason != protocol.ReasonOutputCap || r.Value != nil {
		t.Fatalf("a result over the cap: %+v", r)
	}
	r = &Result{Reason: protocol.ReasonError, Error: strings.Repeat("é", 40), Traceback: strings.Repeat("t", 80)}
	capResult(r, 51)
	if len(r.Error) > 51 || !utf8.ValidString(r.Error) || len(r.Traceback) != 51 || r.Reason != protocol.ReasonError {
		t.Fatalf("error and traceback over the cap: %d %q %d", len(r.Error), r.Error, len(r.Traceback))
	}
	r = &Result{Reason: protocol.Reason("pwned{label=\"x\"}"), Value: []byte("1")}
	capResult(r, 1<<20)
	if r.Reason != protocol.ReasonCrash || r.Value != nil {
		t.Fatalf("an unknown reason from the guest: %+v", r)
	}
}

func TestJobFrameLimit(t *testing.T) {
	small := jobFrameLimit(protocol.Limits{OutputBytes: 1 << 10, ResultBytes: 1 << 10})
	if small >= protocol.MaxFrame || small < 1<<10 {
		t.Fatalf("a small profile's frame limit: %d", small)
	}
	if huge := jobFrameLimit(protocol.Limits{OutputBytes: 1 << 40}); huge != protocol.MaxFrame {
		t.Fatalf("the limit must never pass MaxFrame: %d", huge)
	}
}
