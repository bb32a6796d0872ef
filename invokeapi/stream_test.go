package invokeapi

import (
	"errors"
	"strings"
	"testing"
)

// TestReadEvents reads a stream as the server writes it, with the line
// ends, comments and multi-line data the SSE standard allows.
func TestReadEvents(t *testing.T) {
	stream := "event: stdout\ndata: \"a\\nb\"\n\n" +
		": keep-alive\n\n" +
		"event: stderr\r\ndata:\"oops\"\r\n\r\n" +
		"data: one\ndata: two\n\n" +
		"event: result\ndata: {\"id\":\"x\",\"reason\":\"ok\",\"stdout\":\"a\\nb\"}\n\n" +
		"event: cut\ndata: never finished"
	var got []Event
	if err := ReadEvents(strings.NewReader(stream), func(e Event) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("events %q", got)
	}
	if s, err := got[0].Text(); err != nil || got[0].Name != EventStdout || s != "a\nb" {
		t.Errorf("stdout: %q %q %v", got[0].Name, s, err)
	}
	if s, err := got[1].Text(); err != nil || got[1].Name != EventStderr || s != "oops" {
		t.Errorf("stderr: %q %q %v", got[1].Name, s, err)
	}
	if got[2].Name != "message" || string(got[2].Data) != "one\ntwo" {
		t.Errorf("unnamed: %q %q", got[2].Name, got[2].Data)
	}
	if r, err := got[3].Result(); err != nil || r.ID != "x" || r.Stdout != "a\nb" {
		t.Errorf("result: %+v %v", r, err)
	}
	if _, err := (Event{Name: EventStdout, Data: []byte("not json")}).Text(); err == nil {
		t.Error("bad output data decoded")
	}

	stop := errors.New("stop")
	n := 0
	if err := ReadEvents(strings.NewReader(stream), func(Event) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("a callback's error: %v after %d events", err, n)
	}
}

// FuzzReadEvents: any bytes read as events or an error, never a panic,
// and each event's data is what its data lines said.
func FuzzReadEvents(f *testing.F) {
	f.Add("event: stdout\ndata: \"x\"\n\n")
	f.Add(": c\n\ndata:\n\n\r\n")
	f.Add("event: result\ndata: {}\n\nevent: x")
	f.Fuzz(func(t *testing.T, s string) {
		_ = ReadEvents(strings.NewReader(s), func(e Event) error {
			if e.Name == "" || strings.ContainsAny(e.Name, "\n") {
				t.Fatalf("event name %q", e.Name)
			}
			return nil
		})
	})
}
