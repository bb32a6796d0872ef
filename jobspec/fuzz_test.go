package jobspec

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzParseArg: every argument becomes valid JSON, and text that is not
// JSON comes back as itself, as a JSON string.
func FuzzParseArg(f *testing.F) {
	for _, s := range []string{"1", "hello", `{"a":[1,2]}`, " 2 ", "", "\xff", `"x`, "null", "1e999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := ParseArg(s)
		if !json.Valid(got) {
			t.Fatalf("ParseArg(%q) = %q, not JSON", s, got)
		}
		t2 := strings.TrimSpace(s)
		if t2 == "" || !json.Valid([]byte(t2)) {
			var back string
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatalf("ParseArg(%q) = %q, not a string: %v", s, got, err)
			}
			if string([]rune(s)) != back {
				t.Fatalf("ParseArg(%q) came back as %q", s, back)
			}
		}
	})
}

// FuzzNames: accepted ids and module names are short and hold nothing that
// could reach outside a directory or a URL path segment.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"abc", "blah.dorp", "../x", "a/b", "a..b", strings.Repeat("a", 200), "_", "a.", ".a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidID(s) && (len(s) > 64 || strings.ContainsAny(s, "./\\%?#\x00 ")) {
			t.Fatalf("ValidID accepted %q", s)
		}
		if ValidModule(s) {
			if len(s) > 128 || strings.ContainsAny(s, "/\\\x00 ") || strings.Contains(s, "..") ||
				strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") {
				t.Fatalf("ValidModule accepted %q", s)
			}
		}
	})
}
