package payhook

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
)

func TestCommitChargesAndSettlesOnce(t *testing.T) {
	ctx, g := WithGate(context.Background())
	if From(ctx) != g {
		t.Fatal("the gate is not in its context")
	}
	calls := 0
	failure := errors.New("no settlement")
	g.SetCommitter(func(context.Context) error { calls++; return failure })
	g.NoCharge("changed its mind")
	if err := g.Commit(ctx); !errors.Is(err, failure) {
		t.Fatalf("commit: %v", err)
	}
	if err := g.Commit(ctx); !errors.Is(err, failure) || calls != 1 {
		t.Fatalf("a second commit: %v after %d calls; want the first answer, one call", err, calls)
	}
	if charge, decided, _ := g.Decision(); !charge || !decided {
		t.Fatalf("a committed request is charged: charge %v decided %v", charge, decided)
	}
	if done, err := g.Committed(); !done || !errors.Is(err, failure) {
		t.Fatalf("committed: %v %v", done, err)
	}
}

func TestCommitWithoutCommitter(t *testing.T) {
	ctx, g := WithGate(context.Background())
	if err := g.Commit(ctx); !errors.Is(err, ErrNotCommitted) {
		t.Fatalf("a gate that settles afterwards: %v", err)
	}
	var none *Gate
	if err := none.Commit(ctx); err != nil {
		t.Fatalf("no gate (free mode): %v", err)
	}
}

func TestQuoteExtensionsAndSelling(t *testing.T) {
	ctx, q := WithQuote(context.Background())
	if QuoteFrom(ctx) != q || q.Extensions() != nil || q.Sells() {
		t.Fatal("a fresh quote")
	}
	q.SetPrice("0.01")
	q.SetExtension("bazaar", json.RawMessage(`{"info":{}}`))
	var ext map[string]map[string]any
	if err := json.Unmarshal(q.Extensions(), &ext); err != nil || ext["bazaar"]["info"] == nil {
		t.Fatalf("extensions %s: %v", q.Extensions(), err)
	}
	q.SellsItself()
	if price, answered := q.Price(); !answered || price != "" || !q.Sells() {
		t.Fatalf("a handler that sells itself: price %q answered %v sells %v", price, answered, q.Sells())
	}
	if SellerFrom(context.Background()) != nil {
		t.Fatal("a seller without a gate")
	}
}
