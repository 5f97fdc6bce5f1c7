package test

import (
	"net/http"
	"testing"
)

// TestTrustedProxyStatementsReachUpstreamAsBelieved: what a trusted proxy
// states about the client's scheme, host and port reaches the upstream as
// the edge believes it, over HTTP/1.1 (repeated lines) and h2c (repeated
// fields in one header block): the scheme stated only in Forwarded, and
// of X-Forwarded-Proto/-Host/-Port the last value, the one the proxy
// appended after a client's.
func TestTrustedProxyStatementsReachUpstreamAsBelieved(t *testing.T) {
	up := newHeaderUpstream(t)
	addr := trustedProxyEdge(t, up)
	for _, tc := range []struct {
		name string
		hdr  [][2]string
		want map[string]string
	}{
		{"forwarded proto=https only", [][2]string{{"Forwarded", "for=203.0.113.7;proto=https"}},
			map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Port": "443", "X-Forwarded-Host": "edge.internal", "X-Real-Ip": "203.0.113.7"}},
		{"forwarded host and proto, ipv6 client", [][2]string{{"Forwarded", `for="[2001:db8::7]:4711";host="App.Example.com";proto=HTTPS`}},
			map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Port": "443", "X-Forwarded-Host": "app.example.com", "X-Real-Ip": "2001:db8::7"}},
		{"appended fields", [][2]string{
			{"X-Forwarded-Proto", "https"}, {"X-Forwarded-Proto", "http"},
			{"X-Forwarded-Host", "evil.example"}, {"X-Forwarded-Host", "app.example.com"},
			{"X-Forwarded-Port", "6666"}, {"X-Forwarded-Port", "8080"}},
			map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-Port": "8080", "X-Forwarded-Host": "app.example.com"}},
		{"appended in one list", [][2]string{{"X-Forwarded-Proto", "http, https"}, {"X-Forwarded-Host", "evil.example, app.example.com"}},
			map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Port": "443", "X-Forwarded-Host": "app.example.com"}},
		{"disagreeing statements", [][2]string{{"X-Forwarded-Proto", "https"}, {"Forwarded", "for=203.0.113.7;proto=http"}},
			map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-Port": "80"}},
	} {
		for proto, c := range protocols(t) {
			t.Run(tc.name+"/"+proto, func(t *testing.T) {
				id := tc.name + "-" + proto
				resp, body := send(t, c, "GET", "http://"+addr+"/x", "edge.internal", append([][2]string{{"X-Test-Id", id}}, tc.hdr...))
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d %q", resp.StatusCode, body)
				}
				s, ok := up.got(id)
				if !ok {
					t.Fatal("the upstream saw nothing")
				}
				for name, v := range tc.want {
					if got := s.Header.Values(name); len(got) != 1 || got[0] != v {
						t.Errorf("%s: upstream got %q, want %q", name, got, v)
					}
				}
			})
		}
	}
}
