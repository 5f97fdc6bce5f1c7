package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestEdgeStatedValuesStayWithTheirRequest has many keep-alive clients
// send thousands of requests at once, each with values of its own (path,
// Host with a port, request id or none, traceparent or none), and checks
// that the upstream saw exactly that request's values and that each client
// got exactly its own answer. The values the edge states share arrays
// (the request id in the request and the response, the traceparent, the
// Forwarded element; an upstream response's header values and its body
// live in one allocation with it): an array shared across requests, or a
// slice that an append writes through into a neighbour, shows up here as
// a value of another request or a second value.
func TestEdgeStatedValuesStayWithTheirRequest(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Echo what the edge sent, one line per field, and answer with
		// header fields of the request's own: 3 or 12 of them (the
		// inline values and the array made apart), chunked with a
		// trailer for some.
		var b strings.Builder
		for _, k := range []string{"X-Request-Id", "Traceparent", "Forwarded", "X-Forwarded-Host", "X-Forwarded-Port"} {
			fmt.Fprintf(&b, "%s=%s\n", k, strings.Join(r.Header.Values(k), "|"))
		}
		fmt.Fprintf(&b, "path=%s\n", r.URL.Path)
		fields := 3
		if strings.HasSuffix(r.URL.Path, "/many") {
			fields = 12
		}
		for i := range fields {
			w.Header().Set(fmt.Sprintf("X-Echo-%d", i), r.URL.Path)
		}
		if strings.HasSuffix(r.URL.Path, "/trailer") {
			w.Header().Set("Trailer", "X-Path")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, b.String())
			w.(http.Flusher).Flush()
			w.Header().Set("X-Path", r.URL.Path)
			return
		}
		_, _ = io.WriteString(w, b.String())
	}))
	defer up.Close()
	e := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, strings.TrimPrefix(up.URL, "http://")))

	keepAliveClients(t, 16, 250, func(client *http.Client, w, i int) error {
		return checkOwnValues(client, e.url, w, i)
	})
}

// checkOwnValues sends worker w's i-th request and checks its answer.
func checkOwnValues(client *http.Client, edge string, w, i int) error {
	suffix := []string{"/few", "/many", "/trailer"}[i%3]
	path := fmt.Sprintf("/w%d/%d%s", w, i, suffix)
	host := fmt.Sprintf("h%d.example:%d", w, 1000+i)
	req, _ := http.NewRequest(http.MethodGet, edge+path, nil)
	req.Host = host
	id := ""
	if i%2 == 0 {
		id = fmt.Sprintf("client-%d-%d", w, i)
		req.Header.Set("X-Request-Id", id)
	}
	tp := ""
	if i%4 == 1 {
		tp = fmt.Sprintf("00-%016x%016x-%016x-01", w+1, i+1, i+1)
		req.Header.Set("Traceparent", tp)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("%s: body: %w", path, err)
	}
	got := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	respID := resp.Header.Values("X-Request-Id")
	switch {
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%s: status %d", path, resp.StatusCode)
	case got["path"] != path:
		return fmt.Errorf("%s: the upstream answered %q: not its own request", path, got["path"])
	case len(respID) != 1 || respID[0] != got["X-Request-Id"]:
		return fmt.Errorf("%s: the client got request id %q, the upstream saw %q", path, respID, got["X-Request-Id"])
	case id != "" && got["X-Request-Id"] != id:
		return fmt.Errorf("%s: the upstream saw request id %q, the client sent %q", path, got["X-Request-Id"], id)
	case id == "" && len(got["X-Request-Id"]) != 36:
		return fmt.Errorf("%s: the upstream saw request id %q, not one the edge made", path, got["X-Request-Id"])
	case tp != "" && got["Traceparent"] != tp:
		return fmt.Errorf("%s: the upstream saw traceparent %q, the client sent %q", path, got["Traceparent"], tp)
	case tp == "" && (len(got["Traceparent"]) != 55 || strings.Contains(got["Traceparent"], "|")):
		return fmt.Errorf("%s: the upstream saw traceparent %q, not one the edge started", path, got["Traceparent"])
	case got["Forwarded"] != `for=127.0.0.1;host="`+host+`";proto=http`:
		return fmt.Errorf("%s: the upstream saw Forwarded %q for Host %s", path, got["Forwarded"], host)
	case got["X-Forwarded-Host"] != host || got["X-Forwarded-Port"] != fmt.Sprint(1000+i):
		return fmt.Errorf("%s: the upstream saw X-Forwarded-Host %q, -Port %q for Host %s", path, got["X-Forwarded-Host"], got["X-Forwarded-Port"], host)
	}
	fields := 3
	if suffix == "/many" {
		fields = 12
	}
	for k := range fields {
		if v := resp.Header.Values(fmt.Sprintf("X-Echo-%d", k)); len(v) != 1 || v[0] != path {
			return fmt.Errorf("%s: response field X-Echo-%d is %q", path, k, v)
		}
	}
	if suffix == "/trailer" {
		if v := resp.Trailer.Values("X-Path"); len(v) != 1 || v[0] != path {
			return fmt.Errorf("%s: trailer X-Path is %q", path, v)
		}
	}
	return nil
}
