package admin

import (
	"bytes"
	_ "embed"
	"html"
	"net/http"
)

// dashboardHTML is the admin dashboard: one self-contained page (inline
// style and script, no external assets) that polls /routes and /upstreams.
//
//go:embed dashboard/index.html
var dashboardHTML []byte

// dashboardCSP lets the page run its own inline script and style and talk
// to its own origin, and nothing else: the admin listener may sit on a
// network without Internet access, and must not load third-party code.
const dashboardCSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Dashboard serves the page, naming role (edge or sidecar) in its title.
func Dashboard(role string) http.Handler {
	page := bytes.ReplaceAll(dashboardHTML, []byte("{{ROLE}}"), []byte(html.EscapeString(role)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", dashboardCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		_, _ = w.Write(page)
	})
}
