package caddylualambda

import (
	"encoding/json"
	"errors"
	"net/http"
	"sort"

	"github.com/caddyserver/caddy/v2"

	"github.com/lualambda/caddy-lualambda/vmpool"
)

// adminAPI serves the VM pools' state on Caddy's admin endpoint.
// EXPERIMENTAL: the shape of the answer may change.
//
//	GET /lualambda/pools   every pool: shape, accelerator, ready, live, waiting, snapshots
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "admin.api.lualambda", New: func() caddy.Module { return new(adminAPI) }}
}

// Routes returns the admin routes.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/lualambda/pools", Handler: caddy.AdminHandlerFunc(servePools)}}
}

// poolStatus is one pool in the admin answer.
type poolStatus struct {
	vmpool.Stats
	Error string `json:"error,omitempty"`
}

func servePools(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
	}
	out := []poolStatus{}
	vmPools.Range(func(_, v any) bool {
		sp, ok := v.(*sharedPool)
		if !ok {
			return true
		}
		select {
		case <-sp.ready:
			if sp.err != nil {
				out = append(out, poolStatus{Stats: vmpool.Stats{Name: sp.spec.Name}, Error: sp.err.Error()})
			} else if sp.pool != nil {
				out = append(out, poolStatus{Stats: sp.pool.Stats()})
			}
		default:
			out = append(out, poolStatus{Stats: vmpool.Stats{Name: sp.spec.Name, MemoryMiB: sp.spec.MemoryMiB}, Error: "starting"})
		}
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(out)
}

// Interface guard.
var _ caddy.AdminRouter = (*adminAPI)(nil)
