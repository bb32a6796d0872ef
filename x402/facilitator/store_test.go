package facilitator

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestMemoryStorePrunesByLastValid(t *testing.T) {
	ctx := context.Background()
	m := NewMemoryStore()
	// Last valid rounds out of order: 10, 5, 20, 15, 0, ...
	for i, lv := range []uint64{10, 5, 20, 15, 0, 30, 25} {
		if err := m.MarkSettled(ctx, fmt.Sprint("k", i), lv); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.MarkSettled(ctx, "k0", 99); !errors.Is(err, ErrAlreadySettled) {
		t.Fatalf("second MarkSettled = %v", err)
	}
	check := func(round uint64, want ...string) {
		t.Helper()
		if err := m.Prune(ctx, round); err != nil {
			t.Fatal(err)
		}
		if m.Len() != len(want) {
			t.Fatalf("after Prune(%d): %d records, want %v", round, m.Len(), want)
		}
		for _, k := range want {
			if ok, _ := m.IsSettled(ctx, k); !ok {
				t.Fatalf("after Prune(%d): %s forgotten", round, k)
			}
		}
	}
	check(0, "k0", "k1", "k2", "k3", "k4", "k5", "k6")
	check(10, "k0", "k2", "k3", "k5", "k6") // 10 is still valid in round 10
	check(16, "k2", "k5", "k6")
	check(26, "k5")
	check(1000)
	if err := m.MarkSettled(ctx, "k0", 2000); err != nil {
		t.Fatalf("a pruned key cannot be recorded again: %v", err)
	}
	check(2000, "k0")
}
