// Package admin holds the parts of the admin API that know nothing of the
// gateway's internals: the guard in front of it, the dashboard page, the
// JSON and configuration views, the runtime profiles. The gateway builds
// its own handlers (/config, /routes, /upstreams, /metrics) on them.
package admin

import (
	"crypto/subtle"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/routes"
)

// Guard answers an admin request only when its Host names the admin
// listener directly (an IP literal, localhost, or a name in allowed_hosts)
// and, with a token configured, when it carries the token. The first check
// stops DNS rebinding: a page from evil.example whose name a browser was
// made to resolve to 127.0.0.1 sends Host: evil.example and is refused, so
// its script cannot read /config. Probes (/healthz, /readyz) need no token.
// access is read per request, so a reload's change applies at once.
func Guard(next http.Handler, access func() routes.AdminAccess) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := access()
		if !hostAllowed(r.Host, a.AllowedHosts) {
			httperr.Write(w, r, http.StatusForbidden, "this Host is not the admin listener's: use its address, localhost, or a name in admin.allowed_hosts")
			return
		}
		if a.TokenEnv != "" && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			want := os.Getenv(a.TokenEnv)
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			// An empty or unset variable opens nothing: no token matches.
			if !ok || want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="causeway-admin"`)
				httperr.Write(w, r, http.StatusUnauthorized, "the admin API needs its bearer token")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func hostAllowed(hostport string, allowed []string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false
	}
	if host == "localhost" || net.ParseIP(host) != nil {
		return true
	}
	for _, a := range allowed {
		if strings.EqualFold(a, host) {
			return true
		}
		if suffix, ok := strings.CutPrefix(strings.ToLower(a), "*."); ok && strings.HasSuffix(host, "."+suffix) {
			return true
		}
	}
	return false
}
