package test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Answer is what a raw HTTP/2 exchange read on stream 1: the fields of
// every HEADERS block (the response's and the trailers', in order) and
// the body.
type h2Answer struct {
	fields []hpack.HeaderField
	body   []byte
}

func (a h2Answer) get(name string) string {
	for _, f := range a.fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// h2Exchange sends one request made of fields (pseudo-header fields
// first) on a fresh HTTP/2 connection to the edge (h2: TLS with ALPN; h2c:
// plain, prior knowledge) and reads the answer to its end. Unlike
// net/http's client, it can send a host field beside :authority.
func h2Exchange(t *testing.T, proto, addr string, pool *x509.CertPool, fields []hpack.HeaderField) h2Answer {
	t.Helper()
	var conn net.Conn
	var err error
	if proto == "h2" {
		conn, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "api.example.com", NextProtos: []string{"h2"}})
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dialing the edge: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range fields {
		_ = enc.WriteField(f)
	}
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	var a h2Answer
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) { a.fields = append(a.fields, f) })
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v (so far %v)", err, a.fields)
		}
		end := false
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID != 1 || !f.HeadersEnded() {
				t.Fatalf("unexpected HEADERS frame %v", f)
			}
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				t.Fatal(err)
			}
			end = f.StreamEnded()
		case *http2.DataFrame:
			a.body = append(a.body, f.Data()...)
			end = f.StreamEnded()
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset: %v", f.ErrCode)
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v", f.ErrCode)
		}
		if end {
			return a
		}
	}
}

// An HTTP/2 request whose host header field names another authority than
// its :authority is refused with the edge's 400 (a gRPC call gets it as a
// gRPC status), over TLS and h2c, and never reaches the upstream, as Envoy
// refuses it (RFC 9113 8.3.1). The two compare after scheme-based
// normalization: the host's case and a default port do not make them
// differ. An accepted request reaches the upstream with one Host, the
// :authority. Before, the edge served the request: routed on :authority,
// while net/http's HTTP/2 server left the client's host field in the
// header map for plugins and ext_authz cache keys to read.
func TestH2HostDiffersFromAuthority(t *testing.T) {
	up := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, req *http.Request) bool {
		u.record(req, []byte(req.Host))
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return err == nil
	})
	bases, pool := startH2Edges(t, up.addr)
	cases := []struct {
		name      string
		authority string // "" leaves :authority out
		hosts     []string
		grpc      bool
		refused   bool
		upHost    string // the Host the upstream must see when served
	}{
		{"host differs", "api.example.com", []string{"evil.example.com"}, false, true, ""},
		{"host differs in its port", "api.example.com", []string{"api.example.com:8443"}, false, true, ""},
		{"two host fields", "api.example.com", []string{"api.example.com", "evil.example.com"}, false, true, ""},
		{"host differs, gRPC caller", "api.example.com", []string{"evil.example.com"}, true, true, ""},
		{"same host", "api.example.com", []string{"api.example.com"}, false, false, "api.example.com"},
		{"same host in another case", "api.example.com", []string{"API.Example.COM"}, false, false, "api.example.com"},
		{"same host and port", "api.example.com:8443", []string{"api.example.com:8443"}, false, false, "api.example.com:8443"},
		{"no host field", "api.example.com", nil, false, false, "api.example.com"},
		{"host field without :authority", "", []string{"api.example.com"}, false, false, "api.example.com"},
	}
	for _, proto := range []string{"h2", "h2c"} {
		addr := strings.TrimPrefix(strings.TrimPrefix(bases[proto], "https://"), "http://")
		scheme := map[string]string{"h2": "https", "h2c": "http"}[proto]
		for _, tc := range cases {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				id := proto + "/" + tc.name
				fields := []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: scheme}}
				if tc.authority != "" {
					fields = append(fields, hpack.HeaderField{Name: ":authority", Value: tc.authority})
				}
				fields = append(fields, hpack.HeaderField{Name: ":path", Value: "/svc/Method"})
				for _, h := range tc.hosts {
					fields = append(fields, hpack.HeaderField{Name: "host", Value: h})
				}
				fields = append(fields, hpack.HeaderField{Name: "x-id", Value: id})
				if tc.grpc {
					fields = append(fields, hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
				}
				a := h2Exchange(t, proto, addr, pool, fields)
				seen := up.requests(id)
				status := a.get(":status")
				switch {
				case !tc.refused:
					if status != "200" || string(a.body) != "ok" || len(seen) != 1 || string(seen[0].body) != tc.upHost {
						t.Fatalf("status %s body %q, upstream saw %v: want 200 \"ok\" and one request for %q", status, a.body, seen, tc.upHost)
					}
				case len(seen) != 0:
					t.Fatalf("the upstream saw %d requests, want none", len(seen))
				case tc.grpc:
					if status != "200" || a.get("grpc-status") != "13" || a.get("content-type") != "application/grpc" {
						t.Fatalf("status %s, grpc-status %q, content-type %q: want a gRPC INTERNAL status", status, a.get("grpc-status"), a.get("content-type"))
					}
				default:
					var body struct {
						Error  string `json:"error"`
						Status int    `json:"status"`
					}
					if err := json.Unmarshal(a.body, &body); status != "400" || err != nil || body.Status != 400 || !strings.Contains(body.Error, "host") {
						t.Fatalf("status %s body %q (%v): want the edge's JSON 400 naming the host field", status, a.body, err)
					}
				}
			})
		}
	}
}
