package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The outbound header of a request without a body, and the header map of
// its upstream response, come from pools and go back once the forwarder
// has returned (outboundHeader, transport.RecycleHeader). Thousands of
// concurrent keep-alive requests, each with fields and values of its own,
// go through one edge: every upstream request must carry exactly its
// client's fields and the edge's forwarding fields for its own Host, and
// every client must get its own answer with exactly the response fields
// its upstream answer had. A map given back while its request or
// response is still in use, or shared between two of them, shows here as
// another request's fields (and, under -race, as a race on the map).
func TestEdgeOutboundHeaderStaysWithItsRequest(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Echo-Path", r.URL.Path)
		// Response fields of the request's own, as many as it asks for
		// (up to 12: both sides of the 8 a map holds without a table).
		n, _ := strconv.Atoi(r.Header.Get("X-Want-Fields"))
		for k := range n {
			w.Header().Set(fmt.Sprintf("X-R-%d", k), fmt.Sprintf("%s-%d", r.URL.Path, k))
		}
		if r.Method == http.MethodHead {
			// The fields are all the answer a HEAD gets, on one line.
			w.Header()["X-Echo"] = []string{strings.ReplaceAll(echoFields(r, body), "\n", " / ")}
			return
		}
		_, _ = io.WriteString(w, echoFields(r, body))
	}))
	defer up.Close()
	e := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, strings.TrimPrefix(up.URL, "http://")))

	// The request shapes, taken in turn by every client: the pooled
	// header's (no body), one too large to be kept, one with no field of
	// the client's own, and those that never take a pooled header.
	shapes := []struct {
		name   string
		method string
		fields int // X-C-n fields
		values int // field n has n%values+1 values
		body   bool
	}{
		{"get few fields", http.MethodGet, 3, 3, false},
		{"get many fields", http.MethodGet, 20, 3, false},
		{"head", http.MethodHead, 5, 3, false},
		// Within the engine's 128 lines.
		{"get past what the pool keeps", http.MethodGet, outboundKeepFields + 6, 1, false},
		{"get without fields of its own", http.MethodGet, 0, 1, false},
		{"post with a body", http.MethodPost, 4, 3, true},
	}
	keepAliveClients(t, 16, 250, func(client *http.Client, w, i int) error {
		sh := shapes[i%len(shapes)]
		path := fmt.Sprintf("/w%d/%d", w, i)
		host := fmt.Sprintf("h%d-%d.example", w, i)
		var body io.Reader
		bodyText := ""
		if sh.body {
			bodyText = strings.Repeat(fmt.Sprintf("%d.%d;", w, i), 10)
			body = strings.NewReader(bodyText)
		}
		req := newRequest(sh.method, e.url+path, body)
		req.Host = host
		resFields := i % 13
		req.Header.Set("X-Want-Fields", strconv.Itoa(resFields))
		var want []string
		for n := range sh.fields {
			k := fmt.Sprintf("X-C-%d", n)
			var vv []string
			for v := range n%sh.values + 1 {
				vv = append(vv, fmt.Sprintf("%d-%d-%d-%d", w, i, n, v))
			}
			req.Header[k] = vv
			want = append(want, k+"="+strings.Join(vv, "|"))
		}
		slices.Sort(want)
		want = append(want, "xfh="+host, fmt.Sprintf("body=%q", bodyText))
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("%s %s: %w", sh.name, path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%s %s: body: %w", sh.name, path, err)
		}
		got := string(b)
		if sh.method == http.MethodHead {
			got = strings.ReplaceAll(resp.Header.Get("X-Echo"), " / ", "\n")
		}
		switch {
		case resp.StatusCode != http.StatusOK:
			return fmt.Errorf("%s %s: status %d", sh.name, path, resp.StatusCode)
		case resp.Header.Get("X-Echo-Path") != path:
			return fmt.Errorf("%s %s: the answer is %q's", sh.name, path, resp.Header.Get("X-Echo-Path"))
		case got != strings.Join(want, "\n"):
			return fmt.Errorf("%s %s: the upstream saw\n%s\nthe client sent\n%s", sh.name, path, got, strings.Join(want, "\n"))
		}
		n := 0
		for k, vv := range resp.Header {
			if !strings.HasPrefix(k, "X-R-") {
				continue
			}
			n++
			if want := path + "-" + strings.TrimPrefix(k, "X-R-"); len(vv) != 1 || vv[0] != want {
				return fmt.Errorf("%s %s: response field %s is %q, want %q", sh.name, path, k, vv, want)
			}
		}
		if n != resFields {
			return fmt.Errorf("%s %s: %d X-R- response fields, want %d", sh.name, path, n, resFields)
		}
		return nil
	})
}

// echoFields is what the upstream saw of a request: its X-C- fields with
// their values in order, sorted by name, the X-Forwarded-Host the edge
// set, and the body.
func echoFields(r *http.Request, body []byte) string {
	var lines []string
	for k, vv := range r.Header {
		if strings.HasPrefix(k, "X-C-") {
			lines = append(lines, k+"="+strings.Join(vv, "|"))
		}
	}
	slices.Sort(lines)
	lines = append(lines, "xfh="+strings.Join(r.Header.Values("X-Forwarded-Host"), "|"), fmt.Sprintf("body=%q", body))
	return strings.Join(lines, "\n")
}

func TestOutboundHeaderCloneAndRecycle(t *testing.T) {
	big := http.Header{}
	for n := range outboundKeepFields + 1 {
		big[fmt.Sprint("X-", n)] = []string{"v"}
	}
	for _, tc := range []struct {
		name string
		in   http.Header
		kept bool // back in the pool after recycle
	}{
		{"empty", http.Header{}, true},
		{"nil", nil, true},
		{"values shared and nil kept", http.Header{"A": {"1", "2"}, "B": {"3"}, "C": nil}, true},
		{"too many fields to keep", big, false},
		{"too many values to keep", http.Header{"A": make([]string, outboundKeepValues+1)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o outboundHeader
			h := o.clone(tc.in, outboundRoom)
			if len(h) != len(tc.in) {
				t.Fatalf("clone has %d fields, want %d", len(h), len(tc.in))
			}
			for k, vv := range tc.in {
				if got, ok := h[k]; !ok || !slices.Equal(got, vv) || (vv == nil) != (got == nil) || cap(got) != len(got) {
					t.Fatalf("field %s: %q (cap %d), want %q", k, got, cap(got), vv)
				}
			}
			// The clone is the edge's own: adding to it leaves the
			// client's header alone.
			for k := range h {
				h[k] = append(h[k], "added")
			}
			for k, vv := range tc.in {
				if slices.Contains(vv, "added") {
					t.Fatalf("field %s of the client's header changed: %q", k, vv)
				}
			}
			if kept := o.recycle(); kept != tc.kept {
				t.Fatalf("kept %v, want %v", kept, tc.kept)
			}
			if tc.kept && (len(o.h) != 0 || slices.ContainsFunc(o.sv[:cap(o.sv)], func(s string) bool { return s != "" })) {
				t.Fatalf("recycled with %d fields and values %q still held", len(o.h), o.sv[:cap(o.sv)])
			}
		})
	}
}
