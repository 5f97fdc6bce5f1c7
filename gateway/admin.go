package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/causewayhq/causeway/routes"
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
		writeJSON(w, status, body)
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		f, last, loaded := e.active.cfg, e.lastReload, e.active.loadedAt
		e.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{
			"file":        f.Path,
			"loaded_at":   loaded.UTC().Format(time.RFC3339Nano),
			"last_reload": last,
			"redis":       e.redisStatus(),
			"config":      configView(f),
		})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(e.registry, promhttp.HandlerOpts{Registry: e.registry}))
	e.observer().register(mux) // /routes, /upstreams, the dashboard at /
	if e.opts.Pprof {
		registerPprof(mux)
	}
	return mux
}

// configView is f (a *routes.File or *routes.Sidecar) with the files' own
// key names, for JSON output, every credential masked (routes.View).
func configView(f any) any {
	v, err := routes.View(f)
	if err != nil {
		return map[string]string{"error": "cannot render the configuration: " + err.Error()}
	}
	return v
}

// registerPprof adds the runtime profiles (CPU, heap, goroutines, ...).
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
