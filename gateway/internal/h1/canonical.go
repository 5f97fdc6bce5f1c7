package h1

import "net/textproto"

// CanonicalKey is textproto.CanonicalMIMEHeaderKey of name, a token as the
// parser accepts it: upper case at the start and after each '-', lower case
// elsewhere. It is the one canonicalization of both sides of the engine
// (request heads in the server, response heads in the upstream client).
//
// A common field name comes back as its interned constant, whatever the
// case it was sent in. Otherwise same reports that name is already
// canonical (key is then ""): the caller uses the string it already holds
// for name, so neither case allocates. Only an uncommon name in another
// case does.
func CanonicalKey(name []byte) (key string, same bool) {
	var buf [64]byte
	if len(name) > len(buf) {
		k := textproto.CanonicalMIMEHeaderKey(string(name))
		return k, k == string(name)
	}
	k := buf[:len(name)]
	canonical, upper := true, true
	for i, ch := range name {
		switch {
		case upper && 'a' <= ch && ch <= 'z':
			ch -= 'a' - 'A'
		case !upper && 'A' <= ch && ch <= 'Z':
			ch += 'a' - 'A'
		}
		canonical = canonical && ch == name[i]
		k[i] = ch
		upper = ch == '-'
	}
	if v, ok := commonKeys[string(k)]; ok {
		return v, false
	}
	if canonical {
		return "", true
	}
	return string(k), false
}

// commonKeys are the field names requests and responses often carry, some
// in lower case (HTTP/2-minded clients and servers, some frameworks).
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		// Requests.
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cookie", "Expect", "Forwarded", "Host", "If-Modified-Since", "If-None-Match",
		"Origin", "Range", "Referer", "Te", "Upgrade", "User-Agent", "X-Forwarded-For",
		"X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Traceparent", "Tracestate",
		"X-Api-Key", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol",
		"Sec-Websocket-Extensions", "Grpc-Timeout",
		// Both.
		"Cache-Control", "Connection", "Content-Encoding", "Content-Length", "Content-Range",
		"Content-Type", "Keep-Alive", "Pragma", "Trailer", "Transfer-Encoding", "Via",
		"X-Request-Id",
		// Responses.
		"Accept-Ranges", "Access-Control-Allow-Origin", "Age", "Content-Disposition",
		"Content-Language", "Content-Location", "Content-Security-Policy", "Date", "Etag",
		"Expires", "Last-Modified", "Link", "Location", "Retry-After", "Server", "Set-Cookie",
		"Strict-Transport-Security", "Vary", "Www-Authenticate", "X-Content-Type-Options",
		"X-Frame-Options",
	} {
		m[k] = k
	}
	return m
}()
