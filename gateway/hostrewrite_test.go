package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// A route's host_rewrite is the Host the upstream receives, over many
// requests on reused connections, while
// X-Forwarded-Host and Forwarded keep the client's; a route without it
// passes the client's Host on, over the same upstream connections.
func TestRouteHostRewrite(t *testing.T) {
	up := echoUpstream(t, "up")
	file := listenHeader + `
upstreams:
  up: {endpoints: ["` + hostPort(up) + `"]}
routes:
  - {name: rewritten, match: {path_prefix: /r}, upstream: up, host_rewrite: "internal.svc:8080"}
  - {name: plain, match: {path_prefix: /p}, upstream: up}
`
	te := startEdge(t, file)
	for i := range 200 {
		path, wantHost := "/r", "internal.svc:8080"
		if i%2 == 1 {
			path, wantHost = "/p", "shop.example"
		}
		res, body := get(t, te.url+path, "Host", "shop.example")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
		var e echo
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatal(err)
		}
		if e.Host != wantHost {
			t.Fatalf("request %d to %s: the upstream got Host %q, want %q", i, path, e.Host, wantHost)
		}
		if got := e.Header.Get("X-Forwarded-Host"); got != "shop.example" {
			t.Fatalf("request %d: X-Forwarded-Host %q, want the client's", i, got)
		}
		if got := e.Header.Get("Forwarded"); !strings.Contains(got, `host=shop.example`) && !strings.Contains(got, `host="shop.example"`) {
			t.Fatalf("request %d: Forwarded %q does not carry the client's host", i, got)
		}
	}
}
