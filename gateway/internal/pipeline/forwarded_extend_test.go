package pipeline

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/causewayhq/causeway/internal/clientip"
)

// TestForwardedSentUpstreamStaysReadable: the edge extends a trusted
// proxy's Forwarded with its own element. A value that is not RFC 7239
// syntax (a client's, passed on by a proxy that writes only
// X-Forwarded-For) would swallow the edge's element: after an unclosed
// quote, ", for=...;host=..." is read as part of the quoted string, so an
// upstream reading Forwarded sees no hop of the edge's, or one the
// client's bytes shaped. Such a value is replaced, not extended.
func TestForwardedSentUpstreamStaysReadable(t *testing.T) {
	tp, err := NewTrustedProxies([]string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		prior []string
		want  []string // the for= nodes the upstream reads
	}{
		{"readable chain is extended", []string{`for=203.0.113.9;proto=https`, `for="[2001:db8::1]:80"`}, []string{"203.0.113.9", "2001:db8::1", "10.0.0.1"}},
		{"unclosed quote", []string{`for="6.6.6.6`}, []string{"10.0.0.1"}},
		{"unclosed quote in a second line", []string{`for=203.0.113.9`, `for="6.6.6.6;x=`}, []string{"10.0.0.1"}},
		{"trailing backslash", []string{`for=203.0.113.9;host="a\`}, []string{"10.0.0.1"}},
		{"repeated for", []string{`for=6.6.6.6;for=203.0.113.9`}, []string{"10.0.0.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := httptest.NewRequest(http.MethodGet, "http://api.example.com:8080/", nil)
			in.RemoteAddr = "10.0.0.1:4444"
			in.Header["Forwarded"] = tc.prior
			pi := tp.Resolve(in)
			out := in.Clone(in.Context())
			SetForwardedOn(in, out, &pi)
			got := out.Header.Values("Forwarded")
			nodes, ok := clientip.ForwardedFor(got)
			if !ok {
				t.Fatalf("the upstream's Forwarded %q is not RFC 7239", got)
			}
			var names []string
			for _, n := range nodes {
				names = append(names, n.Addr.String())
			}
			if len(names) != len(tc.want) {
				t.Fatalf("for= nodes %q, want %q (Forwarded %q)", names, tc.want, got)
			}
			for i := range names {
				if names[i] != tc.want[i] {
					t.Fatalf("for= nodes %q, want %q (Forwarded %q)", names, tc.want, got)
				}
			}
		})
	}
}
