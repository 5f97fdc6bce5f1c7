package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"net/http"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/admin"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminHandler serves the admin API. It listens on loopback by default: it
// shows configuration and metrics, never secrets.
func (e *Edge) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusOK
		body := map[string]any{"ready": true}
		if err := e.readiness(); err != nil {
			status = http.StatusServiceUnavailable
			body = map[string]any{"ready": false, "reasons": err.Error()}
		}
		// Endpoint health is shown, not judged: one upstream without
		// endpoints must not take the whole edge out of its load balancer.
		if rt := e.live.Load().runtime(0); rt != nil {
			body["upstreams"] = rt.endpointHealth()
		}
		// Likewise Redis with on_error: allow: shown, and unready only
		// when on_error is deny (readiness above).
		if st := e.redisStatus(); st.Configured {
			body["redis"] = st
		}
		admin.WriteJSON(w, status, body)
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		f, last, loaded := e.active.cfg, e.lastReload, e.active.loadedAt
		e.mu.Unlock()
		admin.WriteJSON(w, http.StatusOK, map[string]any{
			"file":        f.Path,
			"loaded_at":   loaded.UTC().Format(time.RFC3339Nano),
			"last_reload": last,
			"redis":       e.redisStatus(),
			"config":      admin.ConfigView(f),
		})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(e.registry, promhttp.HandlerOpts{Registry: e.registry}))
	e.observer().register(mux) // /routes, /upstreams, the dashboard at /
	if e.opts.Pprof {
		admin.RegisterPprof(mux)
	}
	return mux
}

// endpointHealth reports every upstream's endpoints.
func (rt *runtime) endpointHealth() map[string]proxy.UpstreamHealth {
	out := make(map[string]proxy.UpstreamHealth, len(rt.upstreams))
	for name, u := range rt.upstreams {
		out[name] = u.Readiness()
	}
	return out
}
