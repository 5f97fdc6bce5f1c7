package edgetls

import (
	"net"
	"net/http"
	"regexp"
	"strings"

	"github.com/causewayhq/causeway/internal/httperr"
)

// redirectHostRe keeps the redirect target a plain host name or address:
// the Host header is client input and must not steer the Location elsewhere.
var redirectHostRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$`)

// HTTPHandler serves ACME HTTP-01 challenges and redirects everything else to
// https with 308, which keeps the method and body, and the path and query.
// httpsPort is the https listener's port, written into the Location unless it
// is 443 or empty.
func (m *Manager) HTTPHandler(httpsPort string) http.Handler {
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := hostOnly(r.Host)
		if host == "" || (!redirectHostRe.MatchString(host) && net.ParseIP(host) == nil) {
			httperr.Write(w, r, http.StatusBadRequest, "missing or invalid Host header")
			return
		}
		if strings.Contains(host, ":") { // IPv6 literal
			host = "[" + host + "]"
		}
		if httpsPort != "" && httpsPort != "443" {
			host = net.JoinHostPort(strings.Trim(host, "[]"), httpsPort)
		}
		target := "https://" + host + r.URL.RequestURI()
		w.Header().Set("Location", target)
		w.WriteHeader(http.StatusPermanentRedirect)
	})
	if m.acme == nil {
		return redirect
	}
	// autocert answers only paths under the challenge prefix and hands the
	// rest to redirect. Orders may now use HTTP-01 as well.
	m.acme.http01.Store(true)
	return m.acme.ac.HTTPHandler(redirect)
}

// WrapHSTS adds Strict-Transport-Security to responses over TLS when
// tls.hsts is configured; over plain HTTP the header is meaningless (RFC
// 6797 §7.2) and is not sent.
func (m *Manager) WrapHSTS(next http.Handler) http.Handler {
	if m.hsts == "" {
		return next
	}
	v := m.hsts
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			w.Header().Set("Strict-Transport-Security", v)
		}
		next.ServeHTTP(w, r)
	})
}
