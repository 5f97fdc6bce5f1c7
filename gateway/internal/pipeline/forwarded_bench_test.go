package pipeline

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

// BenchmarkForwardedHeaders is the header handling every proxied request
// gets: hop-by-hop removal, the client-address decision and the sanitising
// pass as it enters, then X-Forwarded-For/-Proto/-Host/-Port, Forwarded and
// X-Real-IP on the outbound copy, from an untrusted peer (set afresh) and
// from a trusted proxy (chain extended). The inbound clone stands for the
// request net/http hands the edge and ReverseProxy's outbound copy.
func BenchmarkForwardedHeaders(b *testing.B) {
	tp, err := NewTrustedProxies([]string{"10.0.0.0/8"})
	if err != nil {
		b.Fatal(err)
	}
	for _, peer := range []string{"192.0.2.7:40000", "10.1.2.3:40000"} {
		b.Run("peer="+peer, func(b *testing.B) {
			in := httptest.NewRequest(http.MethodGet, "http://api.example.com:8080/items", nil)
			in.RemoteAddr = peer
			in.Header.Set("X-Forwarded-For", "203.0.113.9")
			in.Header.Set("Forwarded", "for=203.0.113.9")
			srv := &routes.Server{}
			b.ReportAllocs()
			for b.Loop() {
				// One clone, as before the entry pass existed: it stands
				// for ReverseProxy's outbound copy and gives the entry pass
				// a fresh header map to clean each round.
				r := in.Clone(in.Context())
				DropHopByHop(r.Header)
				pi := tp.Resolve(r)
				SanitizeHeaders(r.Header, pi.Trusted, srv)
				SetForwarded(&httputil.ProxyRequest{In: r, Out: r}, &pi)
			}
		})
	}
}
