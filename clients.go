package caddylualambda

import (
	"net"
	"net/http"
	"net/netip"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/lualambda/caddy-lualambda/payhook"
)

// clientLimiter bounds how many runs and sessions one client has in
// progress at once, so that one client cannot hold every VM and every
// queue slot while others wait.
type clientLimiter struct {
	mu     sync.Mutex
	max    int
	active map[string]int
}

func newClientLimiter(max int) *clientLimiter {
	return &clientLimiter{max: max, active: map[string]int{}}
}

// enter takes one of the client's slots; leave gives it back (once).
func (l *clientLimiter) enter(client string) (leave func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active[client] >= l.max {
		return nil, false
	}
	l.active[client]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.active[client]--; l.active[client] <= 0 {
				delete(l.active, client)
			}
		})
	}, true
}

// clientKey names the client a request counts against: the payer of a paid
// request, else its address as Caddy resolves it (trusted proxies
// included), with IPv6 addresses taken by their /64, which one host
// usually holds whole.
func clientKey(r *http.Request, gate *payhook.Gate) string {
	if payer := gate.Payer(); payer != "" {
		return "payer " + payer
	}
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if ip == "" {
		ip, _, _ = net.SplitHostPort(r.RemoteAddr)
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return "addr " + ip
	}
	addr = addr.Unmap()
	if addr.Is6() {
		if p, err := addr.Prefix(64); err == nil {
			return "net " + p.String()
		}
	}
	return "addr " + addr.String()
}
