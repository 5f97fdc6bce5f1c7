package gateway

import (
	"net/http"
	"net/textproto"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/internal/edgeheader"
	"golang.org/x/net/http/httpguts"
)

// FuzzTrailerForwardable holds the trailer name check against net/http's
// own rules: a name it lets through is one net/http's HTTP/2 server
// declares as a trailer (httpguts.ValidTrailerHeader) and writes on the
// wire (lower-case ASCII token), and the edge's HTTP/1.1 engine writes
// too, so HTTP/1.1 and HTTP/2 clients get the same fields; it is not
// hop-by-hop, not a name the edge states, and the answer does not depend
// on the case of the name, nor on '_' read as '-' (a peer that folds
// them must not find a name the check refused).
func FuzzTrailerForwardable(f *testing.F) {
	for _, s := range []string{"X-Check", "x-check", "X_Request_Id", "Content_Length", "Set-Cookie", "Traceparent", "tracestate",
		"X-Causeway-Peer-Id", "Access-Control-Allow-Origin", "Ratelimit-Remaining", "Upgrade", "Keep_Alive", ":status", "Host",
		"If-Match", "Grpc-Status", "X-Forwarded-For", "X-Secret", "Bad Name", "É", strings.Repeat("x", 70) + "-Causeway", "x-causeway-" + strings.Repeat("a", 70)} {
		f.Add(s)
	}
	stated := http.Header{"X-Request-Id": {"1"}, "X-Tenant": {"edge"}}
	conn := []string{"X-Secret"}
	f.Fuzz(func(t *testing.T, name string) {
		ok := trailerForwardable(name, conn, stated)
		if !ok {
			return
		}
		ck := textproto.CanonicalMIMEHeaderKey(name)
		lower := strings.ToLower(name)
		switch {
		case !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidTrailerHeader(name):
			t.Fatalf("%q passed: net/http refuses it as a trailer", name)
		case !validWireName(lower):
			t.Fatalf("%q passed: net/http's HTTP/2 server would not write it", name)
		case hopHeader(ck) || ck == "X-Secret":
			t.Fatalf("%q passed: hop-by-hop", name)
		case edgeheader.Of(name) != edgeheader.Plain || headerOnlyTrailer(name):
			t.Fatalf("%q passed: the edge states it", name)
		case ck == "X-Request-Id" || ck == "X-Tenant":
			t.Fatalf("%q passed: the header carries it", name)
		}
		for _, other := range []string{lower, strings.ToUpper(name), ck, strings.ReplaceAll(name, "_", "-")} {
			if httpguts.ValidHeaderFieldName(other) && !trailerForwardable(other, conn, stated) {
				t.Fatalf("%q passed, %q did not", name, other)
			}
		}
	})
}

// validWireName is net/http's HTTP/2 check of a field name on the wire:
// a token without upper-case letters.
func validWireName(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if !httpguts.IsTokenRune(r) || 'A' <= r && r <= 'Z' {
			return false
		}
	}
	return true
}
