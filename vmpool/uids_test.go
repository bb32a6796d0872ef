package vmpool

import (
	"strings"
	"testing"
)

func TestParseUIDRange(t *testing.T) {
	good := map[string]UIDRange{
		"1879048192-1879113727":   DefaultUIDRange,
		"0x70000000-0x7000ffff":   DefaultUIDRange,
		"200000 - 200007":         {First: 200000, Count: 8},
		"4294967286-4294967293":   {First: 4294967286, Count: 8},
		"0x70000000-0x70000007":   {First: 0x70000000, Count: 8},
		"1000000000-1999999999":   {First: 1000000000, Count: 1000000000},
		"1879048192-0x7000ffff":   DefaultUIDRange,
		"100000-100099":           {First: 100000, Count: 100},
		"1879048192-1879048199":   {First: 1879048192, Count: 8},
		"  1879048192-1879048199": {First: 1879048192, Count: 8},
	}
	for in, want := range good {
		got, err := ParseUIDRange(in)
		if err != nil || got != want {
			t.Errorf("ParseUIDRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":                      "want first-last",
		"1879048192":            "want first-last",
		"5-4":                   "first <= last",
		"a-b":                   "first <= last",
		"-1-5":                  "first <= last",
		"100000-100003":         "at least 8",
		"0-100000":              "system uids",
		"60000-70000":           "nobody",
		"4294967288-4294967295": "end below",
		"1-99999999999":         "first <= last",
	}
	for in, want := range bad {
		if _, err := ParseUIDRange(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseUIDRange(%q): %v; want an error saying %q", in, err, want)
		}
	}
}

func TestUIDRangeOverlapsAccount(t *testing.T) {
	// nobody (65534) is in /etc/passwd everywhere these tests run.
	r := UIDRange{First: 65530, Count: 8}
	if err := r.checkUnused(); err == nil || !strings.Contains(err.Error(), "/etc/passwd") {
		t.Fatalf("a range holding nobody's uid: %v", err)
	}
	if err := DefaultUIDRange.checkUnused(); err != nil {
		t.Fatalf("default range: %v", err)
	}
}
