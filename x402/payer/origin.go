package payer

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// maxRedirects bounds the redirects the unpaid request follows when the
// HTTP client sets no policy of its own (as net/http does).
const maxRedirects = 10

// CrossOriginError reports that the unpaid request was redirected to
// another origin than the one asked for: the redirect was not followed,
// nothing was sent to that origin and nothing was signed.
type CrossOriginError struct {
	// From is the URL that was asked for.
	From *url.URL
	// To is where the redirect pointed.
	To *url.URL
}

// Error names both origins and says that nothing was paid.
func (e *CrossOriginError) Error() string {
	return fmt.Sprintf("payer: %s redirected to another origin, %s: not followed; nothing was sent there and nothing was signed",
		Printable(e.From.Redacted(), 400), Printable(e.To.Redacted(), 400))
}

// origin is a URL's scheme, host and port, as in a browser's same-origin
// rule; the port is explicit, defaulting by scheme.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host + ":" + port
}

// sameOrigin reports whether a and b have the same scheme, host and port.
func sameOrigin(a, b *url.URL) bool {
	return origin(a) == origin(b)
}

// unpaidClient is the client's HTTP client for the unpaid request: it
// follows redirects within the requested origin (and to others only with
// AllowCrossOrigin), then applies the HTTP client's own redirect policy.
func (c *Client) unpaidClient() *http.Client {
	hc := http.Client{}
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	policy := hc.CheckRedirect
	hc.CheckRedirect = func(next *http.Request, via []*http.Request) error {
		if len(via) > 0 && !c.AllowCrossOrigin && !sameOrigin(via[0].URL, next.URL) {
			return &CrossOriginError{From: via[0].URL, To: next.URL}
		}
		if policy != nil {
			return policy(next, via)
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return nil
	}
	return &hc
}

// asCrossOrigin returns the *CrossOriginError err carries, if any.
func asCrossOrigin(err error) (*CrossOriginError, bool) {
	var co *CrossOriginError
	ok := errors.As(err, &co)
	return co, ok
}
