package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/lualambda/caddy-lualambda/internal/bench"
)

// TestRowsBut checks that --only turns into the skip list of every other
// row, and refuses a name that is no row.
func TestRowsBut(t *testing.T) {
	skip, err := rowsBut([]string{bench.RowIdle, bench.RowX402})
	if err != nil {
		t.Fatal(err)
	}
	if len(skip) != len(bench.Rows())-2 || slices.Contains(skip, bench.RowIdle) || slices.Contains(skip, bench.RowX402) || !slices.Contains(skip, bench.RowWarm) {
		t.Errorf("skip = %v", skip)
	}
	if err := (bench.Options{Skip: skip}).Validate(); err != nil {
		t.Errorf("the skip list does not validate: %v", err)
	}
	if _, err := rowsBut([]string{"storage", "nope"}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown row: %v", err)
	}
}
