package gateway

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A stream (server-sent events over HTTP/1.1) in flight while a refused
// file and then an accepted one are loaded: it finishes on the generation
// it began on, whole and from its own upstream, while new requests reach
// the accepted file's upstream. No defect.
func TestStreamFinishesOnItsGenerationAcrossReloads(t *testing.T) {
	release := make(chan struct{})
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: old-1\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: old-2\n\ndata: end\n\n")
	}))
	t.Cleanup(old.Close)
	next := echoUpstream(t, "next")
	file := func(up, plugins string) string {
		return listenHeader + fmt.Sprintf("upstreams:\n  up: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n", up) + plugins
	}
	te := startEdge(t, file(hostPort(old), ""))
	resp, err := http.Get(te.url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	readEvent := func() string {
		var ev strings.Builder
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("stream cut after %q: %v", ev.String(), err)
			}
			if line == "\n" {
				return ev.String()
			}
			ev.WriteString(strings.TrimSuffix(line, "\n"))
		}
	}
	if ev := readEvent(); ev != "data: old-1" {
		t.Fatalf("first event %q", ev)
	}
	for _, rf := range refusals {
		writeFile(t, te.path, strings.Replace(file(hostPort(next), rf.plugins), "upstreams:\n", "upstreams:\n"+rf.upstreams, 1))
		if err := te.Reload(context.Background()); err == nil {
			t.Fatalf("%s: accepted", rf.name)
		}
	}
	writeFile(t, te.path, file(hostPort(next), ""))
	if err := te.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r2, body := get(t, te.url+"/x"); r2.StatusCode != http.StatusOK || decodeEcho(t, body).Upstream != "next" {
		t.Fatalf("a new request after the accepted reload: %d %s", r2.StatusCode, body)
	}
	close(release)
	for _, want := range []string{"data: old-2", "data: end"} {
		if ev := readEvent(); ev != want {
			t.Fatalf("event %q, want %q", ev, want)
		}
	}
}
