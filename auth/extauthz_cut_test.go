package auth

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// rawAuthzServer answers every connection with answer, written as is after
// the request head has been read, then closes it (with reset, a TCP RST).
func rawAuthzServer(t *testing.T, answer string, reset bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 0, 4096)
				tmp := make([]byte, 4096)
				for !strings.Contains(string(buf), "\r\n\r\n") {
					n, err := c.Read(tmp)
					if err != nil {
						return
					}
					buf = append(buf, tmp[:n]...)
				}
				_, _ = io.WriteString(c, answer)
				if reset {
					_ = c.(*net.TCPConn).SetLinger(0)
				}
			})
		}
	})
	return ln.Addr().String()
}

// TestExtAuthzHTTPServerCutsItsAnswer: a forward-auth server whose answer
// breaks off (the connection closed or reset inside the body, or inside
// the head) has not answered: the request gets status_on_error and never
// reaches the upstream, even when the part received was a 2xx head with
// the upstream headers. A whole 2xx with a huge body is an answer (its
// head decides; the body is read only up to the bound), and a 3xx is a
// denial relayed to the client, as forward-auth login redirects are.
func TestExtAuthzHTTPServerCutsItsAnswer(t *testing.T) {
	huge := strings.Repeat("z", 4<<20)
	for _, tc := range []struct {
		name   string
		answer string
		reset  bool
		status int    // what the client gets
		header string // a header the client must get, "Name: value"
		user   string // allowed: the X-Auth-User the upstream must get (the client sends "forged")
	}{
		{"2xx cut inside a Content-Length body", "HTTP/1.1 200 OK\r\nX-Auth-User: alice\r\nContent-Length: 100\r\n\r\nabc", false, 503, "", ""},
		{"2xx reset inside a Content-Length body", "HTTP/1.1 200 OK\r\nX-Auth-User: alice\r\nContent-Length: 100\r\n\r\nabc", true, 503, "", ""},
		{"2xx cut inside a chunked body", "HTTP/1.1 200 OK\r\nX-Auth-User: alice\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", false, 503, "", ""},
		{"204 cut inside the head", "HTTP/1.1 204 No Content\r\nX-Auth-User: al", false, 503, "", ""},
		{"403 cut inside its body", "HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\nno", false, 403, "", ""},
		{"302 to a login page", "HTTP/1.1 302 Found\r\nLocation: https://login.example/?rd=x\r\nContent-Length: 0\r\n\r\n", false, 302, "Location: https://login.example/?rd=x", ""},
		{"200 with a 4 MiB body, whole", "HTTP/1.1 200 OK\r\nX-Auth-User: alice\r\nContent-Length: " + itoa(len(huge)) + "\r\n\r\n" + huge, false, 204, "", "alice"},
		// The client pre-sets the header the server would add; the server
		// adds nothing: the upstream must not get the client's value.
		{"200 adding nothing", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, 204, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawAuthzServer(t, tc.answer, tc.reset)
			f := parse(t, "  authz:\n    ext_authz:\n      http_url: http://"+addr+"/auth\n      upstream_headers: [X-Auth-User]\n      on_error: deny\n      status_on_error: 503",
				`{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			h, up := handler(t, testSet(t, f, Options{}), f, 0)
			for range 3 { // each on a fresh connection: the server closes
				w := do(h, "/", http.Header{"X-Auth-User": {"forged"}})
				if w.Code != tc.status {
					t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
				}
				if tc.header != "" {
					k, v, _ := strings.Cut(tc.header, ": ")
					if w.Header().Get(k) != v {
						t.Fatalf("%s %q, want %q", k, w.Header().Get(k), v)
					}
				}
				if tc.status == 204 {
					if got := up.header.Values("X-Auth-User"); strings.Join(got, ",") != tc.user {
						t.Fatalf("upstream X-Auth-User %q", up.header.Values("X-Auth-User"))
					}
					continue
				}
				if up.calls != 0 {
					t.Fatalf("the upstream was reached with X-Auth-User %q", up.header.Values("X-Auth-User"))
				}
				if tc.status >= 500 {
					var body struct {
						Status int `json:"status"`
					}
					if json.Unmarshal(w.Body.Bytes(), &body) != nil || body.Status != tc.status {
						t.Fatalf("body %q", w.Body)
					}
				}
			}
		})
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
