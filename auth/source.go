package auth

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/causewayhq/causeway/internal/edgeheader"
)

// sourceKind is where a credential is read from.
type sourceKind uint8

const (
	fromBearer sourceKind = iota // Authorization: Bearer TOKEN
	fromHeader                   // a named header holding the credential itself
	fromCookie
	fromQuery
	fromBasic   // Authorization: Basic base64(user:password)
	fromNowhere // ext_authz: the server decides on the whole request and says what to remove
	fromSession // oidc: a sealed session cookie NAME, or its chunks NAME.0, NAME.1, ..., and the sign-in cookie NAME-login
)

// source names one place a credential is read from and stripped from.
type source struct {
	kind sourceKind
	name string // canonical header name, cookie name or query parameter
}

// extract returns the credential, ReasonMissing when there is none, or
// ReasonMalformed when the request is ambiguous (two copies of it): picking
// one would let a client choose which one an upstream sees.
func (s source) extract(r *http.Request) (string, Reason) {
	switch s.kind {
	case fromBearer:
		return bearerToken(r.Header["Authorization"])
	case fromHeader:
		vs := r.Header[s.name]
		switch {
		case len(vs) == 0 || vs[0] == "" && len(vs) == 1:
			return "", ReasonMissing
		case len(vs) > 1 || hasFoldedTwin(r.Header, s.name):
			return "", ReasonMalformed
		}
		// A named header may still carry the scheme out of habit.
		v := vs[0]
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			v = strings.TrimLeft(v[7:], " ")
		}
		return v, ReasonNone
	case fromCookie:
		cs := r.CookiesNamed(s.name)
		switch {
		case hasCookieTwin(r.Header, s.name):
			// Another spelling of the name that a PHP or ASP.NET upstream
			// reads as this cookie (see queryTwin): ambiguous as two copies.
			return "", ReasonMalformed
		case len(cs) == 0 || cs[0].Value == "" && len(cs) == 1:
			return "", ReasonMissing
		case len(cs) > 1:
			return "", ReasonMalformed
		}
		return cs[0].Value, ReasonNone
	case fromQuery:
		if r.URL == nil || r.URL.RawQuery == "" {
			return "", ReasonMissing
		}
		return queryCredential(r.URL.RawQuery, s.name)
	}
	return "", ReasonMissing
}

// queryCredential reads the query parameter name from a raw query. The
// query is read as every common upstream parser may read it, not only as
// Go does: a pair split on ';' as well as '&' (Rack before 3, Python
// before 3.9.2, Java matrix-style parsers), a name with blanks around it,
// another case, '.' or ' ' for '_', or '[...]' after it (PHP, ASP.NET,
// Rack, qs). Go's own parser skips a pair holding ';' entirely, so
// "x=1;key=B&key=A" was read as key=A alone while such an upstream took B:
// the edge checked one credential and the upstream could read another.
// Any spelling other than the one exact pair, or two of them, makes the
// request ambiguous (ReasonMalformed), as two copies of a header do.
func queryCredential(raw, name string) (string, Reason) {
	var (
		val   string
		found int
	)
	for pair := range strings.SplitSeq(raw, "&") {
		for piece := range strings.SplitSeq(pair, ";") {
			k, v, _ := strings.Cut(piece, "=")
			if !queryTwin(k, name) {
				continue
			}
			if found++; found > 1 || len(piece) != len(pair) {
				return "", ReasonMalformed
			}
			uk, err := url.QueryUnescape(k)
			if err != nil || uk != name {
				return "", ReasonMalformed
			}
			if val, err = url.QueryUnescape(v); err != nil {
				return "", ReasonMalformed
			}
		}
	}
	if val == "" {
		// Absent, or present and empty ("key=", "key"): no credential.
		return "", ReasonMissing
	}
	return val, ReasonNone
}

// queryTwin reports whether the raw (still percent-encoded) query key k
// names the parameter name to some upstream's parser: decoded leniently
// (a stray '%' stays, as PHP keeps it), blanks around it and anything
// from a NUL or '[' on dropped, compared without case and with ' ' and
// '.' read as '_' (PHP's mangling of variable names).
func queryTwin(k, name string) bool {
	d := lenientUnescape(k)
	if i := strings.IndexByte(d, 0); i >= 0 {
		d = d[:i]
	}
	if i := strings.IndexByte(d, '['); i > 0 && !strings.Contains(name, "[") {
		d = d[:i]
	}
	d = strings.Trim(d, " \t")
	if len(d) != len(name) {
		return false
	}
	for i := 0; i < len(d); i++ {
		if foldQueryByte(d[i]) != foldQueryByte(name[i]) {
			return false
		}
	}
	return true
}

func foldQueryByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == ' ' || c == '.':
		return '_'
	}
	return c
}

// lenientUnescape decodes '+' and every valid %XX of s, leaving any other
// '%' as it is, as lenient query parsers do.
func lenientUnescape(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// bearerToken reads an RFC 6750 Authorization header. Another scheme
// (Basic, ...) is not a credential for a bearer authenticator: missing.
func bearerToken(vs []string) (string, Reason) {
	switch {
	case len(vs) == 0:
		return "", ReasonMissing
	case len(vs) > 1:
		return "", ReasonMalformed
	}
	scheme, tok, ok := strings.Cut(vs[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", ReasonMissing
	}
	tok = strings.Trim(tok, " ")
	if !ok || tok == "" || strings.ContainsAny(tok, " \t") {
		return "", ReasonMalformed
	}
	return tok, ReasonNone
}

// hasFoldedTwin reports whether h carries name also under another
// spelling a CGI-style upstream (CGI, WSGI, PHP) reads as the same
// variable: X_Api_Key is HTTP_X_API_KEY, as X-Api-Key is. Such names reach
// the edge only under server.allow_underscore_headers; there, a second
// copy of a credential header is as ambiguous as two X-Api-Key lines: the
// edge would check one while the upstream may read the other.
func hasFoldedTwin(h http.Header, name string) bool {
	for k := range h {
		if foldedTwin(k, name) {
			return true
		}
	}
	return false
}

// foldedTwin reports whether header key k is another spelling of name with
// '_' that a CGI-style upstream reads as the same variable. It compares
// in place: this runs per request over the request's header names.
func foldedTwin(k, name string) bool {
	if k == name || len(k) != len(name) || strings.IndexByte(k, '_') < 0 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if edgeheader.FoldByte(k[i]) != edgeheader.FoldByte(name[i]) {
			return false
		}
	}
	return true
}

// sameSlot reports whether s and o read the same place: Bearer and Basic
// both live in Authorization, so keeping one keeps the other.
func (s source) sameSlot(o source) bool {
	inAuthorization := func(k sourceKind) bool { return k == fromBearer || k == fromBasic }
	return s == o || inAuthorization(s.kind) && inAuthorization(o.kind)
}

// strip removes the credential from r, which must be the middleware's own
// copy (its Header and URL are not the caller's).
func (s source) strip(r *http.Request) {
	switch s.kind {
	case fromBearer, fromBasic:
		r.Header.Del("Authorization")
	case fromHeader:
		r.Header.Del(s.name)
		for k := range r.Header {
			if foldedTwin(k, s.name) {
				delete(r.Header, k)
			}
		}
	case fromCookie:
		stripCookie(r.Header, s.name)
	case fromSession:
		stripCookies(r.Header, func(n string) bool { return isSessionCookie(s.name, n) })
	case fromQuery:
		if r.URL != nil && r.URL.RawQuery != "" {
			r.URL.RawQuery = stripQuery(r.URL.RawQuery, s.name)
		}
	}
}

// isSessionCookie reports whether cookie is one of the session's: name,
// name.N or name-login.
func isSessionCookie(name, cookie string) bool {
	rest, ok := strings.CutPrefix(cookie, name)
	switch {
	case !ok:
		return false
	case rest == "" || rest == "-login":
		return true
	case len(rest) < 2 || rest[0] != '.':
		return false
	}
	for _, c := range rest[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// stripCookie rewrites the Cookie headers without name, under any
// spelling queryTwin matches, leaving every other cookie byte for byte as
// the client sent it.
func stripCookie(h http.Header, name string) {
	stripCookies(h, func(n string) bool { return n == name || queryTwin(n, name) })
}

// hasCookieTwin reports whether h carries a cookie whose name is not name
// but that an upstream reads as name: PHP decodes cookie names and mangles
// them as query names, ASP.NET compares them without case.
func hasCookieTwin(h http.Header, name string) bool {
	for _, line := range h["Cookie"] {
		for part := range strings.SplitSeq(line, ";") {
			n, _, _ := strings.Cut(part, "=")
			n = textproto.TrimString(n)
			if n != name && queryTwin(n, name) {
				return true
			}
		}
	}
	return false
}

// stripCookies rewrites the Cookie headers without the cookies drop
// names.
func stripCookies(h http.Header, drop func(string) bool) {
	lines := h["Cookie"]
	if len(lines) == 0 {
		return
	}
	out := make([]string, 0, len(lines))
	for _, line := range lines {
		parts := strings.Split(line, ";")
		kept := parts[:0]
		for _, p := range parts {
			// The name as net/http reads it (Request.Cookie, which extract
			// uses), blanks around it trimmed: "session =TOKEN" is the
			// session cookie to it, and must go as the credential read.
			n, _, _ := strings.Cut(strings.TrimSpace(p), "=")
			if !drop(textproto.TrimString(n)) {
				kept = append(kept, strings.TrimSpace(p))
			}
		}
		if len(kept) > 0 {
			out = append(out, strings.Join(kept, "; "))
		}
	}
	if len(out) == 0 {
		h.Del("Cookie")
		return
	}
	h["Cookie"] = out
}

// stripQuery removes every pair naming name from a raw query, under any
// spelling queryTwin matches and in pieces split on ';' too, keeping the
// order and encoding of the others (re-encoding would change what the
// upstream signs or caches on).
func stripQuery(raw, name string) string {
	var b strings.Builder
	for pair := range strings.SplitSeq(raw, "&") {
		if strings.IndexByte(pair, ';') >= 0 {
			var kept []string
			for piece := range strings.SplitSeq(pair, ";") {
				if k, _, _ := strings.Cut(piece, "="); !queryTwin(k, name) {
					kept = append(kept, piece)
				}
			}
			if len(kept) == 0 {
				continue
			}
			pair = strings.Join(kept, ";")
		} else if k, _, _ := strings.Cut(pair, "="); queryTwin(k, name) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(pair)
	}
	return b.String()
}
