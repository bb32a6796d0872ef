package payer

import (
	"net/url"
	"testing"
)

func TestSameOrigin(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"http://example.com/a", "http://example.com/b?x=1", true},
		{"http://Example.COM/a", "HTTP://example.com:80/b", true},
		{"https://example.com/a", "https://example.com:443/", true},
		{"http://[::1]:8080/a", "http://[::1]:8080/b", true},
		{"http://example.com/a", "https://example.com/a", false},
		{"https://example.com/a", "http://example.com/a", false},
		{"http://example.com/a", "http://example.com:8080/a", false},
		{"http://example.com/a", "http://pay.example.com/a", false},
		{"http://example.com/a", "http://example.com.evil.net/a", false},
		{"http://127.0.0.1:8080/a", "http://localhost:8080/a", false},
		{"http://user@example.com/a", "http://example.com/a", true},
	} {
		a, err := url.Parse(tc.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := url.Parse(tc.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := sameOrigin(a, b); got != tc.same {
			t.Errorf("sameOrigin(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}
