package protocol_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/lualambda/caddy-lualambda/guest/protocol"
)

// frame builds a raw frame: length, type, payload.
func frame(t protocol.FrameType, payload []byte) []byte {
	b := make([]byte, 5, 5+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)+1))
	b[4] = byte(t)
	return append(b, payload...)
}

// FuzzReadFrame: ReadFrame never panics, never returns more than its
// limit, and what it returns is exactly the frame read.
func FuzzReadFrame(f *testing.F) {
	f.Add(frame(protocol.FrameHello, []byte(`{"version":2}`)), 1024)
	f.Add(frame(protocol.FrameResult, []byte(`{"reason":"ok"}`)), 16)
	f.Add([]byte{0, 0, 0, 0, 1}, 1024)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 6}, 1<<20)
	f.Add([]byte{0, 0, 0, 5, 99, 1, 2, 3, 4}, 1024)
	f.Fuzz(func(t *testing.T, data []byte, limit int) {
		if limit < 0 {
			limit = -limit
		}
		limit %= 1 << 20
		typ, payload, err := protocol.ReadFrame(bytes.NewReader(data), limit)
		if err != nil {
			if payload != nil {
				t.Fatal("a refused frame returned a payload")
			}
			return
		}
		if len(payload) > limit {
			t.Fatalf("payload of %d bytes past the limit %d", len(payload), limit)
		}
		if typ < protocol.FrameHello || typ > protocol.FrameResize {
			t.Fatalf("unknown type %d accepted", typ)
		}
		if !bytes.Equal(data[:5+len(payload)], frame(typ, payload)) {
			t.Fatal("the frame read differs from the bytes")
		}
	})
}

// FuzzDecodeJob: DecodeJob never panics, and a job it accepts encodes back
// to a payload that decodes to the same packages and encodes the same again
// (JSON itself is normalised on the first pass: spacing, empty fields).
func FuzzDecodeJob(f *testing.F) {
	seed, _ := protocol.EncodeJob(protocol.Job{Source: "return 1", Packages: []protocol.PackageHeader{{Name: "a"}}, Entropy: []byte{1, 2}}, [][]byte{[]byte("PK")})
	f.Add(seed)
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0, 0, 0, 40, '{'})
	f.Add([]byte(`xxxx{"packages":[{"name":"a","size":-1}]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		job, zips, err := protocol.DecodeJob(payload)
		if err != nil {
			return
		}
		if len(zips) != len(job.Packages) {
			t.Fatalf("%d packages declared, %d returned", len(job.Packages), len(zips))
		}
		again, err := protocol.EncodeJob(job, zips)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		job2, zips2, err := protocol.DecodeJob(again)
		if err != nil {
			t.Fatalf("decode again: %v", err)
		}
		if len(zips2) != len(zips) {
			t.Fatalf("round trip: %d packages, then %d", len(zips), len(zips2))
		}
		for i := range zips {
			if !bytes.Equal(zips[i], zips2[i]) {
				t.Fatalf("round trip changed package %d", i)
			}
		}
		third, err := protocol.EncodeJob(job2, zips2)
		if err != nil || !bytes.Equal(again, third) {
			t.Fatalf("encoding is not stable: %v\n%q\n%q", err, again, third)
		}
	})
}

// FuzzResultFrame decodes a guest's Result frame as the host does (read
// the frame, JSON into protocol.Result): no panic, and a reason outside
// Reasons is reported invalid.
func FuzzResultFrame(f *testing.F) {
	f.Add(frame(protocol.FrameResult, []byte(`{"reason":"ok","value":4,"token":"t"}`)))
	f.Add(frame(protocol.FrameResult, []byte(`{"reason":"crash\n","error":"x","traceback":"y"}`)))
	f.Add(frame(protocol.FrameResult, []byte(`{"reason":"exit","output_bytes":-1,"run_ms":1e308}`)))
	f.Add(frame(protocol.FrameOutput, []byte{1, 'h', 'i'}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			typ, payload, err := protocol.ReadFrame(r, 1<<16)
			if err != nil {
				return
			}
			if typ != protocol.FrameResult {
				continue
			}
			var res protocol.Result
			if json.Unmarshal(payload, &res) != nil {
				return
			}
			valid := false
			for _, known := range protocol.Reasons() {
				valid = valid || res.Reason == known
			}
			if res.Reason.Valid() != valid {
				t.Fatalf("reason %q: Valid says %v", res.Reason, res.Reason.Valid())
			}
		}
	})
}

// TestReasons: every reason is valid, and nothing else is.
func TestReasons(t *testing.T) {
	want := []protocol.Reason{"ok", "error", "timeout", "memory", "output_cap", "exit", "crash"}
	if got := protocol.Reasons(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Reasons() = %v, want %v", got, want)
	}
	for _, r := range want {
		if !r.Valid() {
			t.Errorf("%q is not valid", r)
		}
	}
	for _, r := range []protocol.Reason{"", "OK", "crash ", "exit\x00", "killed"} {
		if r.Valid() {
			t.Errorf("%q is valid", r)
		}
	}
}
