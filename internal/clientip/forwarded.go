package clientip

import (
	"net/netip"
	"strings"
)

// Node is one "for" node of an RFC 7239 Forwarded element.
type Node struct {
	// Addr is the node's address (unmapped, no zone, the port dropped);
	// invalid for "unknown", an obfuscated identifier ("_hidden") and an
	// element without a "for" parameter.
	Addr netip.Addr
	// Name is the node as written, without quotes, brackets or port
	// ("unknown", "_hidden"); empty when the element had no "for".
	Name string
	// Host and Proto are the element's "host" and "proto" parameters as
	// written, unquoted and not checked ("" when absent): a reader that
	// builds a URL from them validates them itself.
	Host, Proto string
}

// ForwardedFor returns the "for" nodes of the Forwarded header values, one
// per element, in the order received (left to right, header lines in
// order). ok is false when a value is not RFC 7239 syntax: an unterminated
// quote, a parameter without "=", a repeated parameter in one element, a
// "for" node that is not an IPv4 address, a bracketed IPv6 address,
// "unknown" or an obfuscated identifier, each with an optional port. A
// comma or semicolon inside a quoted string does not end the element.
//
// Tolerated, as senders write them: spaces and tabs around ",", ";" and
// empty elements (RFC 9110 list syntax), parameter names in any case, and
// an unquoted node that a strict sender would have quoted
// (for=[2001:db8::1]:80). An unbracketed IPv6 address is refused: with a
// port it would be ambiguous.
func ForwardedFor(values []string) (nodes []Node, ok bool) {
	for _, v := range values {
		var good bool
		if nodes, good = appendForwardedFor(nodes, v, true); !good {
			return nodes, false
		}
	}
	return nodes, true
}

// ForwardedValid reports whether ForwardedFor reads values (without
// building the nodes): a proxy that extends a Forwarded header must not
// append its element to one that is not RFC 7239 syntax, where an open
// quote would take the element in.
func ForwardedValid(values []string) bool {
	for _, v := range values {
		if _, good := appendForwardedFor(nil, v, false); !good {
			return false
		}
	}
	return true
}

func appendForwardedFor(nodes []Node, v string, collect bool) ([]Node, bool) {
	i := 0
	for {
		// One element: pairs separated by ';', ended by ',' or the end.
		i = skipOWS(v, i)
		if i == len(v) {
			return nodes, true
		}
		if v[i] == ',' { // empty element
			i++
			continue
		}
		var node Node
		var host, proto string
		var seen [4]bool // for, by, host, proto: each at most once
		empty := true
		for {
			i = skipOWS(v, i)
			if i == len(v) || v[i] == ',' {
				break
			}
			if v[i] == ';' {
				i++
				continue
			}
			name, value, next, good := forwardedPair(v, i)
			if !good {
				return nodes, false
			}
			// Pairs are separated by ';' and elements by ',': anything
			// else after a value ("for=a b=c", `for="a"x`) is not syntax.
			if i = skipOWS(v, next); i < len(v) && v[i] != ';' && v[i] != ',' {
				return nodes, false
			}
			empty = false
			if k := pairIndex(name); k >= 0 {
				if seen[k] {
					return nodes, false
				}
				seen[k] = true
			}
			switch {
			case strings.EqualFold(name, "host"):
				host = value
			case strings.EqualFold(name, "proto"):
				proto = value
			case strings.EqualFold(name, "for"):
				if node, good = parseNode(value); !good {
					return nodes, false
				}
			}
		}
		if !empty && collect {
			node.Host, node.Proto = host, proto
			nodes = append(nodes, node)
		}
		if i < len(v) {
			i++ // the ','
		}
	}
}

// forwardedPair reads token "=" (token / quoted-string) at v[i:], with no
// space around the "=" (RFC 7239 §4).
func forwardedPair(v string, i int) (name, value string, next int, ok bool) {
	start := i
	for i < len(v) && isTchar(v[i]) {
		i++
	}
	if i == start || i == len(v) || v[i] != '=' {
		return "", "", 0, false
	}
	name = v[start:i]
	i++
	if i < len(v) && v[i] == '"' {
		var b []byte // only for a quoted-pair
		i++
		vs := i
		for {
			if i == len(v) {
				return "", "", 0, false // unterminated
			}
			c := v[i]
			if c == '"' {
				break
			}
			if c == '\\' {
				if i+1 == len(v) {
					return "", "", 0, false
				}
				if b == nil {
					b = append([]byte{}, v[vs:i]...)
				}
				b = append(b, v[i+1])
				i += 2
				continue
			}
			if c < 0x20 && c != '\t' || c == 0x7f {
				return "", "", 0, false
			}
			if b != nil {
				b = append(b, c)
			}
			i++
		}
		value = v[vs:i]
		if b != nil {
			value = string(b)
		}
		return name, value, i + 1, true
	}
	vs := i
	for i < len(v) && isTchar(v[i]) || i < len(v) && (v[i] == '[' || v[i] == ']' || v[i] == ':') {
		i++
	}
	if i == vs {
		return "", "", 0, false
	}
	return name, v[vs:i], i, true
}

func pairIndex(name string) int {
	for k, p := range [...]string{"for", "by", "host", "proto"} {
		if strings.EqualFold(name, p) {
			return k
		}
	}
	return -1
}

// parseNode reads an RFC 7239 §6 node: nodename [ ":" node-port ].
func parseNode(s string) (Node, bool) {
	name, port := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return Node{}, false
		}
		name, port = s[:end+1], s[end+1:]
		if port != "" {
			if port[0] != ':' {
				return Node{}, false
			}
			port = port[1:]
			if port == "" {
				return Node{}, false
			}
		}
	default:
		if j := strings.IndexByte(s, ':'); j >= 0 {
			name, port = s[:j], s[j+1:]
			if port == "" || strings.IndexByte(port, ':') >= 0 {
				return Node{}, false // an unbracketed IPv6 address, or a bad port
			}
		}
	}
	if port != "" && !validNodePort(port) {
		return Node{}, false
	}
	switch {
	case strings.EqualFold(name, "unknown"):
		return Node{Name: name}, true
	case strings.HasPrefix(name, "_"):
		if !validObfuscated(name) {
			return Node{}, false
		}
		return Node{Name: name}, true
	case strings.HasPrefix(name, "["):
		a, err := netip.ParseAddr(name[1 : len(name)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return Node{}, false
		}
		return Node{Addr: a.Unmap(), Name: name[1 : len(name)-1]}, true
	default:
		a, err := netip.ParseAddr(name)
		if err != nil || !a.Is4() {
			return Node{}, false
		}
		return Node{Addr: a, Name: name}, true
	}
}

// validNodePort: 1*5DIGIT up to 65535, or an obfuscated port.
func validNodePort(p string) bool {
	if p[0] == '_' {
		return validObfuscated(p)
	}
	if len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}

// validObfuscated: "_" 1*( ALPHA / DIGIT / "." / "_" / "-" ).
func validObfuscated(s string) bool {
	if len(s) < 2 || s[0] != '_' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if c != '.' && c != '_' && c != '-' && !isAlnum(c) {
			return false
		}
	}
	return true
}

func skipOWS(v string, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
		i++
	}
	return i
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// isTchar reports an RFC 9110 token character.
func isTchar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
