package clientip

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestForwardedFor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []string
		want   string // the nodes, addresses or names, joined by " "; "-" for no for
		wantOK bool
	}{
		{"plain IPv4", []string{"for=192.0.2.60"}, "192.0.2.60", true},
		{"parameter name in any case", []string{"For=192.0.2.60;PROTO=https"}, "192.0.2.60", true},
		{"quoted IPv4 with a port", []string{`for="192.0.2.60:4711"`}, "192.0.2.60", true},
		{"quoted IPv6 in brackets", []string{`for="[2001:db8:cafe::17]"`}, "2001:db8:cafe::17", true},
		{"quoted IPv6 with a port", []string{`for="[2001:db8:cafe::17]:4711"`}, "2001:db8:cafe::17", true},
		{"unquoted IPv6 in brackets (lenient)", []string{`for=[2001:db8::1]:80`}, "2001:db8::1", true},
		{"IPv4-mapped unmapped", []string{`for="[::ffff:192.0.2.1]"`}, "192.0.2.1", true},
		{"unknown", []string{"for=unknown"}, "unknown", true},
		{"obfuscated node and port", []string{`for="_hidden:_port"`}, "_hidden", true},
		{"other parameters first", []string{"proto=https;by=203.0.113.43;for=192.0.2.60"}, "192.0.2.60", true},
		{"several elements", []string{"for=192.0.2.43, for=198.51.100.17"}, "192.0.2.43 198.51.100.17", true},
		{"several lines", []string{"for=192.0.2.43", "for=198.51.100.17;proto=http"}, "192.0.2.43 198.51.100.17", true},
		{"spaces, tabs and empty elements", []string{" ,for=192.0.2.43 ;\tproto=https , ,for=198.51.100.17,"}, "192.0.2.43 198.51.100.17", true},
		{"element without for", []string{"proto=https;host=a.example, for=192.0.2.1"}, "- 192.0.2.1", true},
		{"comma and semicolon inside a quoted host", []string{`host="a,b;c";for=192.0.2.1`}, "192.0.2.1", true},
		{"quoted-pair", []string{`for="192.0.2.\1"`}, "192.0.2.1", true},
		{"empty header", []string{""}, "", true},
		{"unterminated quote", []string{`for="192.0.2.1`}, "", false},
		{"comma inside a quoted for", []string{`for="198.51.100.1, 192.0.2.1"`}, "", false},
		{"repeated for in one element", []string{"for=192.0.2.1;for=198.51.100.1"}, "", false},
		{"repeated proto in one element", []string{"for=192.0.2.1;proto=http;proto=https"}, "", false},
		{"no =", []string{"for"}, "", false},
		{"space before =", []string{"for =192.0.2.1"}, "", false},
		{"space after =", []string{"for= 192.0.2.1"}, "", false},
		{"pairs without ;", []string{"for=192.0.2.1 proto=https"}, "", false},
		{"text after a quoted value", []string{`for="192.0.2.1"x`}, "", false},
		{"empty value", []string{"for=;proto=https"}, "", false},
		{"empty quoted value", []string{`for=""`}, "", false},
		{"unbracketed IPv6", []string{`for="2001:db8::1"`}, "", false},
		{"IPv4 in brackets", []string{`for="[192.0.2.1]"`}, "", false},
		{"zone", []string{`for="[fe80::1%eth0]"`}, "", false},
		{"bracket not closed", []string{`for="[2001:db8::1"`}, "", false},
		{"text after the bracket", []string{`for="[2001:db8::1]x"`}, "", false},
		{"port out of range", []string{`for="192.0.2.1:65536"`}, "", false},
		{"empty port", []string{`for="192.0.2.1:"`}, "", false},
		{"a host name", []string{"for=client.example"}, "", false},
		{"bare underscore", []string{"for=_"}, "", false},
		{"bad obfuscated character", []string{`for="_a+b"`}, "", false},
		{"control character in quotes", []string{"for=\"192.0.2.1\x01\""}, "", false},
		{"one bad line spoils all", []string{"for=192.0.2.1", "for=="}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes, ok := ForwardedFor(tc.values)
			if ok != tc.wantOK {
				t.Fatalf("ForwardedFor(%q) ok = %v, want %v (nodes %v)", tc.values, ok, tc.wantOK, nodes)
			}
			if !ok {
				return
			}
			var got []string
			for _, n := range nodes {
				switch {
				case n.Addr.IsValid():
					got = append(got, n.Addr.String())
				case n.Name != "":
					got = append(got, n.Name)
				default:
					got = append(got, "-")
				}
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("ForwardedFor(%q) = %q, want %q", tc.values, g, tc.want)
			}
		})
	}
}

// TestResolveForwarded: the Forwarded chain is walked like X-Forwarded-For,
// and a request carrying both is decided as Resolve documents.
func TestResolveForwarded(t *testing.T) {
	r := New(mustPrefixes(t, "10.0.0.0/8", "2001:db8:ffff::/48"))
	for _, tc := range []struct {
		name    string
		peer    string
		xff     []string
		fwd     []string
		want    string
		wantOK  bool
		wantSrc Source
	}{
		{"untrusted peer: Forwarded ignored", "192.0.2.1:1", nil, []string{"for=203.0.113.9"}, "192.0.2.1", true, FromPeer},
		{"trusted peer: right-most untrusted node", "10.0.0.1:1", nil, []string{"for=198.51.100.1, for=203.0.113.9"}, "203.0.113.9", true, FromForwarded},
		{"trusted nodes skipped", "10.0.0.1:1", nil, []string{`for=203.0.113.9, for="[2001:db8:ffff::2]:80"`}, "203.0.113.9", true, FromForwarded},
		{"every node trusted: the left-most", "10.0.0.1:1", nil, []string{"for=10.3.3.3, for=10.2.2.2"}, "10.3.3.3", true, FromForwarded},
		{"forged nodes left of the client never read", "10.0.0.1:1", nil, []string{"for=unknown, for=203.0.113.9"}, "203.0.113.9", true, FromForwarded},
		{"unknown from a trusted hop", "10.0.0.1:1", nil, []string{"for=203.0.113.9, for=unknown, for=10.2.2.2"}, "10.2.2.2", false, FromForwarded},
		{"obfuscated at the peer", "10.0.0.1:1", nil, []string{"for=_hidden"}, "10.0.0.1", false, FromForwarded},
		{"element without for at the peer", "10.0.0.1:1", nil, []string{"proto=https"}, "10.0.0.1", false, FromForwarded},
		{"bad syntax", "10.0.0.1:1", nil, []string{`for="203.0.113.9`}, "10.0.0.1", false, FromForwarded},
		{"blank headers are absent", "10.0.0.1:1", []string{" , "}, []string{""}, "10.0.0.1", true, FromPeer},
		{"both agree", "10.0.0.1:1", []string{"203.0.113.9"}, []string{"for=203.0.113.9"}, "203.0.113.9", true, FromXFF},
		{"both agree past trusted hops of different lengths", "10.0.0.1:1", []string{"203.0.113.9, 10.5.5.5"}, []string{"for=203.0.113.9"}, "203.0.113.9", true, FromXFF},
		{"disagree: the client cannot be told", "10.0.0.1:1", []string{"198.51.100.1"}, []string{"for=203.0.113.9"}, "10.0.0.1", false, FromPeer},
		{"disagree the other way round", "10.0.0.1:1", []string{"203.0.113.9"}, []string{"for=198.51.100.1"}, "10.0.0.1", false, FromPeer},
		{"X-Forwarded-For of trusted hops only defers to Forwarded", "10.0.0.1:1", []string{"10.9.9.9"}, []string{"for=203.0.113.9"}, "203.0.113.9", true, FromForwarded},
		{"Forwarded of trusted hops only defers to X-Forwarded-For", "10.0.0.1:1", []string{"203.0.113.9, 10.4.4.4"}, []string{"for=10.4.4.4"}, "203.0.113.9", true, FromXFF},
		{"both of trusted hops only, different", "10.0.0.1:1", []string{"10.9.9.9"}, []string{"for=10.8.8.8"}, "10.0.0.1", false, FromPeer},
		{"Forwarded broken, X-Forwarded-For fine", "10.0.0.1:1", []string{"203.0.113.9"}, []string{"for=_hidden"}, "10.0.0.1", false, FromPeer},
		{"X-Forwarded-For broken, Forwarded fine", "10.0.0.1:1", []string{"unknown"}, []string{"for=203.0.113.9"}, "10.0.0.1", false, FromPeer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer, _ := ParseAddr(tc.peer)
			got, ok, src := r.ResolveSource(peer, tc.xff, tc.fwd)
			if got.String() != tc.want || ok != tc.wantOK || src != tc.wantSrc {
				t.Errorf("ResolveSource(%s, %q, %q) = %v, %v, %d; want %s, %v, %d", tc.peer, tc.xff, tc.fwd, got, ok, src, tc.want, tc.wantOK, tc.wantSrc)
			}
			h := http.Header{}
			if tc.xff != nil {
				h["X-Forwarded-For"] = tc.xff
			}
			if tc.fwd != nil {
				h["Forwarded"] = tc.fwd
			}
			if got2, ok2 := r.ResolveRemote(tc.peer, h); got2 != got || ok2 != ok {
				t.Errorf("ResolveRemote = %v, %v; Resolve %v, %v", got2, ok2, got, ok)
			}
		})
	}
}

// FuzzForwardedFor holds the parser to a plain reading of RFC 7239: split
// the value into elements at commas outside quotes, elements into pairs at
// semicolons outside quotes, unquote, and read the "for" node with
// ParseAddr's rules plus the RFC's brackets. Whatever it accepts, it must
// never return an address that the header did not contain, nor a mapped
// or zoned one; and a value that is a single plain "for=ADDR" must come
// back as ADDR.
func FuzzForwardedFor(f *testing.F) {
	for _, s := range []string{
		"for=192.0.2.60;proto=http;by=203.0.113.43", `for="[2001:db8:cafe::17]:4711"`, "for=unknown, for=_x",
		`For="_gazonk"`, `for=192.0.2.43, for="[2001:db8:cafe::17]"`, `host="a,b";for=1.2.3.4`, `for="1.2.3.4`,
		"for=1.2.3.4;for=5.6.7.8", `for="\"1.2.3.4\""`, " , ,", "proto=https", `for="[::ffff:10.0.0.1]"`,
	} {
		f.Add(s, "")
	}
	r := New(mustPrefixes(f, "10.0.0.0/8"))
	f.Fuzz(func(t *testing.T, a, b string) {
		values := []string{a, b}
		nodes, ok := ForwardedFor(values)
		ref, refOK := referenceForwardedFor(values)
		if ok != refOK {
			t.Fatalf("ForwardedFor(%q) ok = %v; reference %v", values, ok, refOK)
		}
		if ForwardedValid(values) != ok {
			t.Fatalf("ForwardedValid(%q) = %v, ForwardedFor ok = %v", values, !ok, ok)
		}
		if ok {
			if len(nodes) != len(ref) {
				t.Fatalf("ForwardedFor(%q) = %v; reference %v", values, nodes, ref)
			}
			for i := range nodes {
				if nodes[i] != ref[i] {
					t.Fatalf("ForwardedFor(%q) node %d = %+v; reference %+v", values, i, nodes[i], ref[i])
				}
				if a := nodes[i].Addr; a.IsValid() && (a.Is4In6() || a.Zone() != "") {
					t.Fatalf("%v: mapped or zoned", a)
				}
			}
		}
		// The walk never names an address that is neither the peer nor
		// one of the nodes.
		peer := netip.MustParseAddr("10.0.0.1")
		got, _ := r.Resolve(peer, nil, values)
		if got != peer {
			seen := false
			for _, n := range nodes {
				seen = seen || n.Addr == got
			}
			if !seen {
				t.Fatalf("Resolve(%q) = %v, not a node", values, got)
			}
		}
	})
}

// referenceForwardedFor is the slow, literal reading FuzzForwardedFor
// compares with.
func referenceForwardedFor(values []string) ([]Node, bool) {
	var nodes []Node
	for _, v := range values {
		elems, ok := splitOutsideQuotes(v, ',')
		if !ok {
			return nil, false
		}
		for _, e := range elems {
			if strings.Trim(e, " \t") == "" {
				continue
			}
			pairs, _ := splitOutsideQuotes(e, ';')
			var node Node
			var host, proto string
			seen := map[string]bool{}
			hasPair := false
			for _, p := range pairs {
				p = strings.Trim(p, " \t")
				if p == "" {
					continue
				}
				hasPair = true
				name, value, found := strings.Cut(p, "=")
				if !found || name == "" || strings.IndexFunc(name, func(c rune) bool { return c > 0x7f || !isTchar(byte(c)) }) >= 0 {
					return nil, false
				}
				lname := strings.ToLower(name)
				if lname == "for" || lname == "by" || lname == "host" || lname == "proto" {
					if seen[lname] {
						return nil, false
					}
					seen[lname] = true
				}
				uq, ok := unquote(value)
				if !ok {
					return nil, false
				}
				switch lname {
				case "host":
					host = uq
				case "proto":
					proto = uq
				case "for":
					if node, ok = referenceNode(uq); !ok {
						return nil, false
					}
				}
			}
			if hasPair {
				node.Host, node.Proto = host, proto
				nodes = append(nodes, node)
			}
		}
	}
	return nodes, true
}

// splitOutsideQuotes splits at sep outside quoted strings; ok is false
// when a quote is left open.
func splitOutsideQuotes(s string, sep byte) ([]string, bool) {
	var out []string
	inQ, start := false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inQ && c == '\\':
			i++
			if i == len(s) {
				return nil, false
			}
		case c == '"':
			inQ = !inQ
		case !inQ && c == sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if inQ {
		return nil, false
	}
	return append(out, s[start:]), true
}

// unquote reads a token (with the brackets and colons a node may carry
// unquoted) or one whole quoted-string.
func unquote(v string) (string, bool) {
	if v == "" {
		return "", false
	}
	if v[0] != '"' {
		for i := 0; i < len(v); i++ {
			if c := v[i]; !isTchar(c) && c != '[' && c != ']' && c != ':' {
				return "", false
			}
		}
		return v, true
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && i+1 < len(v):
			i++
			b.WriteByte(v[i])
		case c == '"':
			return b.String(), i == len(v)-1
		case c < 0x20 && c != '\t' || c == 0x7f:
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return "", false
}

func referenceNode(s string) (Node, bool) {
	host, port := s, ""
	if i := strings.LastIndex(s, "]:"); strings.HasPrefix(s, "[") && i >= 0 {
		host, port = s[:i+1], s[i+2:]
		if port == "" {
			return Node{}, false
		}
	} else if !strings.HasPrefix(s, "[") && strings.Count(s, ":") == 1 {
		host, port, _ = strings.Cut(s, ":")
		if port == "" {
			return Node{}, false
		}
	} else if !strings.HasPrefix(s, "[") && strings.Contains(s, ":") {
		return Node{}, false
	}
	if port != "" {
		if port[0] == '_' {
			if !validObfuscated(port) {
				return Node{}, false
			}
		} else if p, ok := parseDecimal(port); !ok || p > 65535 || len(port) > 5 {
			return Node{}, false
		}
	}
	if strings.EqualFold(host, "unknown") {
		return Node{Name: host}, true
	}
	if strings.HasPrefix(host, "_") {
		return Node{Name: host}, validObfuscated(host)
	}
	if inner, ok := strings.CutPrefix(host, "["); ok {
		inner, ok = strings.CutSuffix(inner, "]")
		a, err := netip.ParseAddr(inner)
		if !ok || err != nil || !a.Is6() || a.Zone() != "" || strings.ContainsAny(inner, "[]") {
			return Node{}, false
		}
		return Node{Addr: a.Unmap(), Name: inner}, true
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Is4() {
		return Node{}, false
	}
	return Node{Addr: a, Name: host}, true
}

func parseDecimal(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
		if n > 1<<20 {
			return n, true
		}
	}
	return n, len(s) > 0
}

// FuzzResolveBoth holds Resolve with both headers to what it promises: an
// untrusted peer is the client whatever the headers say; the client is
// the peer or an address one of the chains holds; each header alone
// resolves as it does when it is the only one; and when each alone names
// a different untrusted client, the request is unresolved (neither header
// wins, since a proxy that writes one passes on the client's other).
func FuzzResolveBoth(f *testing.F) {
	for _, s := range [][3]string{
		{"10.0.0.1:1", "203.0.113.9", "for=203.0.113.9"},
		{"10.0.0.1:1", "198.51.100.1", "for=203.0.113.9"},
		{"10.0.0.1:1", "10.9.9.9", "for=203.0.113.9"},
		{"10.0.0.1:1", "", `for="[2001:db8::1]:80", for=10.0.0.3`},
		{"10.0.0.1:1", "unknown", "for=203.0.113.9"},
		{"192.0.2.1:1", "10.0.0.2", "for=10.0.0.2"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	r := New(mustPrefixes(f, "10.0.0.0/8", "2001:db8:ffff::/48"))
	f.Fuzz(func(t *testing.T, peerStr, xff, fwd string) {
		peer, peerOK := ParseAddr(peerStr)
		got, ok := r.ResolveRemote(peerStr, http.Header{"X-Forwarded-For": {xff}, "Forwarded": {fwd}})
		if !peerOK {
			if ok || got.IsValid() {
				t.Fatalf("invalid peer %q resolved to %v, %v", peerStr, got, ok)
			}
			return
		}
		if !r.Trusts(peer) {
			if got != peer || !ok {
				t.Fatalf("untrusted peer %v: got %v, %v", peer, got, ok)
			}
			return
		}
		a, aOK := r.Resolve(peer, []string{xff}, nil)
		b, bOK := r.Resolve(peer, nil, []string{fwd})
		if got != peer && got != a && got != b {
			t.Fatalf("peer %v xff %q fwd %q: %v is in neither chain (%v, %v)", peer, xff, fwd, got, a, b)
		}
		hasXFF, hasFwd := present([]string{xff}), present([]string{fwd})
		switch {
		case hasXFF && !hasFwd:
			if got != a || ok != aOK {
				t.Fatalf("X-Forwarded-For alone: %v, %v; want %v, %v", got, ok, a, aOK)
			}
		case hasFwd && !hasXFF:
			if got != b || ok != bOK {
				t.Fatalf("Forwarded alone: %v, %v; want %v, %v", got, ok, b, bOK)
			}
		case hasXFF && hasFwd:
			if aOK && bOK && a != b && !r.Trusts(a) && !r.Trusts(b) && ok {
				t.Fatalf("xff %q fwd %q name %v and %v: resolved to %v", xff, fwd, a, b, got)
			}
			if ok && (!aOK || !bOK) {
				t.Fatalf("xff %q fwd %q: one chain unreadable, yet resolved to %v", xff, fwd, got)
			}
		}
	})
}

// TestForwardedHop: the element whose host= and proto= say what the client
// addressed is the one the client-facing trusted proxy wrote, where the
// walk from the right stops; never one the client wrote to its left, nor
// the nearest proxy's when it describes an inner hop.
func TestForwardedHop(t *testing.T) {
	r := New([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	trusted, untrusted := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("203.0.113.9")
	for _, tc := range []struct {
		name             string
		peer             netip.Addr
		values           []string
		wantHost, wantPr string
		wantOK           bool
	}{
		{"one element", trusted, []string{`for=203.0.113.1;host=a.example;proto=https`}, "a.example", "https", true},
		{"quoted values", trusted, []string{`for="203.0.113.1:1";host="a.example:8443";proto="https"`}, "a.example:8443", "https", true},
		{"quoted-pair unescaped", trusted, []string{`for=203.0.113.1;host="a\.example"`}, "a.example", "", true},
		{"client-facing hop of a chain", trusted, []string{
			`for=198.51.100.1;host=forged.example;proto=http, for=203.0.113.1;host=a.example;proto=https`,
			`for=10.0.0.2;host=inner.internal;proto=http`,
		}, "a.example", "https", true},
		{"all trusted: left-most", trusted, []string{`for=10.0.0.3;host=a.example, for=10.0.0.2;host=inner.internal`}, "a.example", "", true},
		{"hidden node stops the walk", trusted, []string{`for=198.51.100.1;host=forged.example, for=_hidden;host=a.example;proto=https, for=10.0.0.2;proto=http`}, "a.example", "https", true},
		{"element without for stops the walk", trusted, []string{`host=forged.example, host=a.example;proto=https`}, "a.example", "https", true},
		{"no host or proto", trusted, []string{`for=203.0.113.1`}, "", "", true},
		{"untrusted peer", untrusted, []string{`for=203.0.113.1;host=a.example;proto=https`}, "", "", false},
		{"invalid peer", netip.Addr{}, []string{`for=203.0.113.1;host=a.example;proto=https`}, "", "", false},
		{"unterminated quote", trusted, []string{`for=203.0.113.1;host="a.example`}, "", "", false},
		{"repeated proto", trusted, []string{`for=203.0.113.1;proto=http;proto=https`}, "", "", false},
		{"no element", trusted, []string{` , ,`}, "", "", false},
		{"no header", trusted, nil, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hop, ok := r.ForwardedHop(tc.peer, tc.values)
			if ok != tc.wantOK || hop.Host != tc.wantHost || hop.Proto != tc.wantPr {
				t.Fatalf("ForwardedHop = %+v, %v; want host %q proto %q, %v", hop, ok, tc.wantHost, tc.wantPr, tc.wantOK)
			}
		})
	}
}
