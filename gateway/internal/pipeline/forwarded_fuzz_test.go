package pipeline

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/causewayhq/causeway/internal/clientip"
)

// FuzzSetForwarded sends a request with fuzzed X-Forwarded-*, Forwarded,
// Host and peer through resolve and SetForwarded, and reads back what the
// upstream would get:
//   - every value is a valid header field value (nothing splits a header);
//   - from an untrusted peer, nothing the client sent survives: the chain
//     is the peer alone and Forwarded has one element;
//   - from a trusted proxy, the chain it sent is extended with the peer;
//   - the Forwarded element this hop adds parses back (RFC 7239) to the
//     peer, the Host and the scheme;
//   - X-Real-IP is the client the one resolver decided.
func FuzzSetForwarded(f *testing.F) {
	f.Add("10.0.0.1:1234", "a.example", "203.0.113.9, 10.0.0.2", "for=192.0.2.60;proto=http", "https", "b.example", "8443", false)
	f.Add("192.0.2.1:1", "a.example:8080", "1.1.1.1", `for="_gazonk"`, "", "", "", true)
	f.Add("[2001:db8::1]:443", "[2001:db8::2]:8443", "", "", "", "", "", true)
	f.Add("[::ffff:10.0.0.1]:1", `a"b\c`, "garbage, ,", "for=unknown", "", "", "", false)
	f.Add("not-an-address", "", "", "", "", "", "", false)
	tp, err := NewTrustedProxies([]string{"10.0.0.0/8", "2001:db8::/32"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, remote, host, xff, fwd, xfProto, xfHost, xfPort string, tlsOn bool) {
		for _, v := range []string{host, xff, fwd, xfProto, xfHost, xfPort} {
			if !httpguts.ValidHeaderFieldValue(v) {
				return // net/http refuses the request before the edge sees it
			}
		}
		in := httptest.NewRequest(http.MethodGet, "http://x/", nil)
		in.RemoteAddr, in.Host = remote, host
		if tlsOn {
			in.TLS = &tls.ConnectionState{}
		}
		for k, v := range map[string]string{"X-Forwarded-For": xff, "Forwarded": fwd, "X-Forwarded-Proto": xfProto, "X-Forwarded-Host": xfHost, "X-Forwarded-Port": xfPort} {
			if v != "" {
				in.Header[k] = []string{v}
			}
		}
		pi := tp.Resolve(in)
		out := in.Clone(in.Context())
		out.Header = in.Header.Clone()
		SetForwarded(&httputil.ProxyRequest{In: in, Out: out}, &pi)

		for k, vv := range out.Header {
			for _, v := range vv {
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("%s: %q is not a valid header value", k, v)
				}
			}
		}
		peer, peerOK := clientip.ParseAddr(remote)
		gotXFF := out.Header.Get("X-Forwarded-For")
		// An unparseable peer (not a TCP listener's RemoteAddr) has no
		// address to append; only the checks on validity apply to it.
		wantPeer := gotXFF
		if peerOK {
			wantPeer = peer.String()
			if !strings.HasSuffix(gotXFF, wantPeer) {
				t.Fatalf("X-Forwarded-For %q does not end with the peer %q", gotXFF, wantPeer)
			}
		}
		elems := out.Header.Values("Forwarded")
		if len(elems) != 1 {
			t.Fatalf("Forwarded: %q", elems)
		}
		proto := "http"
		if tlsOn {
			proto = "https"
		}
		if !pi.Trusted {
			if gotXFF != wantPeer || out.Header.Get("X-Forwarded-Host") != host || out.Header.Get("X-Forwarded-Proto") != proto {
				t.Fatalf("untrusted peer %q: the client's headers survived: %v", remote, out.Header)
			}
		} else if xff != "" && peerOK && gotXFF != xff+", "+wantPeer {
			t.Fatalf("trusted peer %q: X-Forwarded-For %q, want %q", remote, gotXFF, xff+", "+wantPeer)
		}
		last := elems[0]
		// A trusted proxy's Forwarded is extended only when it is RFC
		// 7239 syntax; otherwise the edge's element replaces it.
		if pi.Trusted && fwd != "" && clientip.ForwardedValid([]string{fwd}) {
			if !strings.HasPrefix(last, fwd+", ") {
				t.Fatalf("trusted peer: Forwarded %q does not keep %q", last, fwd)
			}
			last = last[len(fwd)+2:]
		}
		params, ok := parseForwardedElement(last)
		if !ok {
			t.Fatalf("Forwarded element %q does not parse", last)
		}
		wantFor := "unknown"
		if peerOK {
			wantFor = peer.String()
			if peer.Is6() {
				wantFor = "[" + wantFor + "]"
			}
		}
		if params["for"] != wantFor || params["proto"] != proto || params["host"] != host {
			t.Fatalf("Forwarded element %q reads as %v; want for=%s host=%q proto=%s", last, params, wantFor, host, proto)
		}
		if xri := out.Header.Get("X-Real-Ip"); xri != pi.ClientStr {
			t.Fatalf("X-Real-IP %q, resolved client %q", xri, pi.ClientStr)
		}
		// The upstream hears one scheme and host: the ones the edge
		// builds its own URLs from (the OIDC callback, the redirect).
		gotProto := out.Header.Get("X-Forwarded-Proto")
		if gotProto != "http" && gotProto != "https" {
			t.Fatalf("X-Forwarded-Proto %q", gotProto)
		}
		if o, sent := Origin(in, &pi, ""), gotProto+"://"+out.Header.Get("X-Forwarded-Host"); o != sent {
			t.Fatalf("Origin %q, but the upstream hears %q", o, sent)
		}
		if pi.Trusted && xfPort != "" && out.Header.Get("X-Forwarded-Port") != xfPort && validPort(lastValue([]string{xfPort})) && lastValue([]string{xfPort}) == xfPort {
			t.Fatalf("X-Forwarded-Port %q, the proxy's %q", out.Header.Get("X-Forwarded-Port"), xfPort)
		}
	})
}

// FuzzLastValue checks lastValue against a plain reading: every line
// split at commas, entries trimmed of spaces and tabs, the last non-empty
// one, lower-cased.
func FuzzLastValue(f *testing.F) {
	f.Add("https, http", "")
	f.Add(" , HTTPS ,,", "\t")
	f.Add("", ",")
	f.Add("a", "b, ,")
	f.Fuzz(func(t *testing.T, a, b string) {
		want := ""
		for _, line := range []string{a, b} {
			for _, e := range strings.Split(line, ",") {
				if e = strings.Trim(e, " \t"); e != "" {
					want = strings.ToLower(e)
				}
			}
		}
		if got := lastValue([]string{a, b}); got != want {
			t.Fatalf("lastValue(%q, %q) = %q, want %q", a, b, got, want)
		}
	})
}

// parseForwardedElement reads one RFC 7239 forwarded-element: pairs of
// token=value separated by ";", a value being a token or a quoted-string.
func parseForwardedElement(s string) (map[string]string, bool) {
	params := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, false
		}
		name := strings.ToLower(s[:eq])
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' {
					i++
					if i == len(s) {
						return nil, false
					}
				}
				b.WriteByte(s[i])
			}
			if i == len(s) {
				return nil, false
			}
			val, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexByte(s, ';')
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
			if val == "" || strings.ContainsAny(val, " \t\",") {
				return nil, false
			}
		}
		if _, dup := params[name]; dup {
			return nil, false
		}
		params[name] = val
		if s != "" {
			if s[0] != ';' {
				return nil, false
			}
			s = s[1:]
		}
	}
	return params, true
}
