package x402pay

import (
	"testing"
	"time"
)

// Settled payments are forgotten once settledTTL has passed, oldest first,
// and only those.
func TestPaymentLocksForgetExpired(t *testing.T) {
	l := newPaymentLocks()
	old := time.Now().Add(-settledTTL - time.Minute)
	for _, k := range []string{"old1", "old2"} {
		l.settled[k] = spentPayment{at: old, settled: true}
		l.order = append(l.order, settledPayment{key: k, at: old})
	}
	// old2 settled again later (after it had expired elsewhere): its newer
	// record stays.
	recent := time.Now().Add(-time.Minute)
	l.settled["old2"] = spentPayment{at: recent, settled: true}
	l.order = append(l.order, settledPayment{key: "old2", at: recent})

	if r := l.claim("new"); r != "" {
		t.Fatal(r)
	}
	l.release("new", true, true)
	if _, ok := l.settled["old1"]; ok {
		t.Fatal("an expired payment is still remembered")
	}
	for _, k := range []string{"old2", "new"} {
		if r := l.claim(k); r == "" {
			t.Fatalf("%s was forgotten", k)
		}
	}
	if len(l.order) != 2 || len(l.settled) != 2 {
		t.Fatalf("order %v, settled %v", l.order, l.settled)
	}
}
