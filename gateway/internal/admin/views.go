package admin

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"

	"github.com/causewayhq/causeway/routes"
)

// ConfigView is f (a *routes.File or *routes.Sidecar) with the files' own
// key names, for JSON output, every credential masked (routes.View).
func ConfigView(f any) any {
	v, err := routes.View(f)
	if err != nil {
		return map[string]string{"error": "cannot render the configuration: " + err.Error()}
	}
	return v
}

// RegisterPprof adds the runtime profiles (CPU, heap, goroutines, ...).
func RegisterPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// WriteJSON answers v, indented.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
