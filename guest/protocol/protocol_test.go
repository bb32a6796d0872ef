package protocol_test

import (
	"bytes"
	"testing"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
)

// TestJobCarriesEntropyAndTime checks that a job's entropy and time survive
// the frame encoding next to its packages.
func TestJobCarriesEntropyAndTime(t *testing.T) {
	entropy := []byte{0, 1, 2, 250, 251, 255}
	job := protocol.Job{
		Source:    "return 1",
		Packages:  []protocol.PackageHeader{{Name: "a"}, {Name: "b"}},
		Entropy:   entropy,
		UnixNanos: 1_700_000_000_123_456_789,
	}
	payload, err := protocol.EncodeJob(job, [][]byte{[]byte("zip-a"), []byte("zip-bb")})
	if err != nil {
		t.Fatal(err)
	}
	got, zips, err := protocol.DecodeJob(payload)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Entropy, entropy) || got.UnixNanos != job.UnixNanos {
		t.Fatalf("entropy %v time %d, want %v %d", got.Entropy, got.UnixNanos, entropy, job.UnixNanos)
	}
	if len(zips) != 2 || string(zips[0]) != "zip-a" || string(zips[1]) != "zip-bb" {
		t.Fatalf("packages %q", zips)
	}
}
