package invokeapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// A run streams its output when its request has "Accept: text/event-stream"
// (EventStreamType): the answer is then Server-Sent Events instead of one
// JSON document, sent as the guest prints:
//
//	event: stdout
//	data: "hello\n"
//
//	event: stderr
//	data: "warning\n"
//
//	: keep-alive
//
//	event: result
//	data: {"id":"...","reason":"ok",...}
//
// A stdout or stderr event's data is one JSON string, the text the code
// printed (newlines escaped, so one data line per event). The last event is
// one result event whose data is the RunResponse a run without streaming
// answers, on one line. A comment line (": keep-alive") comes after 15
// seconds without an event. The token is in the TokenHeader response header
// as well as in the result.
//
// Nothing is sent until the guest has the job: errors before it (a bad
// request, a busy server, a 402) are the usual JSON answers, with their
// statuses. A paid run settles before the first byte of the stream, so the
// payment's response header comes with it.

// Streaming constants.
const (
	// EventStreamType is the media type a run is asked to stream with
	// (Accept) and that a streamed answer has (Content-Type).
	EventStreamType = "text/event-stream"
	// EventStdout and EventStderr carry printed text as a JSON string.
	EventStdout = "stdout"
	EventStderr = "stderr"
	// EventResult carries the RunResponse and ends the stream.
	EventResult = "result"
)

// Event is one Server-Sent Event of a streamed run.
type Event struct {
	// Name is the event's type: EventStdout, EventStderr or EventResult.
	Name string
	// Data is the event's data: a JSON string for output, a RunResponse
	// for the result.
	Data []byte
}

// Text decodes the text of a stdout or stderr event.
func (e Event) Text() (string, error) {
	var s string
	if err := json.Unmarshal(e.Data, &s); err != nil {
		return "", fmt.Errorf("decode %s event: %w", e.Name, err)
	}
	return s, nil
}

// Result decodes a result event.
func (e Event) Result() (RunResponse, error) {
	var r RunResponse
	if err := json.Unmarshal(e.Data, &r); err != nil {
		return r, fmt.Errorf("decode result event: %w", err)
	}
	return r, nil
}

// MaxEventBytes bounds one event a reader accepts.
const MaxEventBytes = 64 << 20

// ErrEventTooLarge is ReadEvents' error for an event over MaxEventBytes.
var ErrEventTooLarge = errors.New("invokeapi: event too large")

// ReadEvents reads Server-Sent Events from r and calls fn with each, as it
// arrives, until r ends or fn returns an error (which ReadEvents returns).
// Comments are skipped; an event without a name is "message", as in the
// SSE standard.
func ReadEvents(r io.Reader, fn func(Event) error) error {
	br := bufio.NewReader(r)
	var name string
	var data bytes.Buffer
	hasData := false
	for {
		line, err := readLine(br)
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch {
		case line == "":
			if hasData {
				if name == "" {
					name = "message"
				}
				if ferr := fn(Event{Name: name, Data: bytes.Clone(data.Bytes())}); ferr != nil {
					return ferr
				}
			}
			name, hasData = "", false
			data.Reset()
		case strings.HasPrefix(line, ":"):
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				name = value
			case "data":
				if hasData {
					data.WriteByte('\n')
				}
				hasData = true
				if data.Len()+len(value) > MaxEventBytes {
					return ErrEventTooLarge
				}
				data.WriteString(value)
			}
		}
		if err != nil {
			return nil // the last line had no newline
		}
	}
}

// readLine reads one line without its end (LF, CRLF or CR before LF),
// bounded by MaxEventBytes.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := br.ReadSlice('\n')
		b = append(b, chunk...)
		if len(b) > MaxEventBytes+16 {
			return "", ErrEventTooLarge
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		line := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		return line, err
	}
}
