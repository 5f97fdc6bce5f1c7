package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

// readBodyPlugin reads the whole request body before the route's
// forwarder and hands it on from memory, as a plugin that verifies a
// body's signature does: the client's trailer section has arrived by the
// time the forwarder sees the request.
const readBodyPlugin = "test-read-body-first"

type readBodyFirst struct{}

func (readBodyFirst) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		next.ServeHTTP(w, r)
	})
}

func init() {
	plugins.Register(readBodyPlugin, func(context.Context, routes.Raw) (plugins.Instance, error) {
		return readBodyFirst{}, nil
	})
}

// TestRequestTrailersBodyReadFirst: behind a plugin that reads the body
// first, the upstream gets the same trailer fields as without it: only
// those the client announced, without the names its Connection header
// nominated or spelled with '_'. The client's server adds every field it
// received to the request's Trailer at the body's end, announced or not,
// so the names that go on are the ones announced as the request entered.
// The tunnel (ReverseProxy, for upgrade requests) copies the request's
// Trailer with the values in it: it must announce the same names and
// send none of them.
func TestRequestTrailersBodyReadFirst(t *testing.T) {
	u := startTrailerUpstream(t, false)
	e := startEdge(t, listenHeader+fmt.Sprintf("plugins:\n  first: {use: %s}\nupstreams:\n  u: {endpoints: [%q]}\n"+
		"routes:\n  - {name: r, match: {path_prefix: /}, plugins: [first], upstream: u}\n", readBodyPlugin, u.addr))
	for i, tc := range []trailerCase{
		{name: "unannounced fields", announce: "X-Check", fields: []string{"X-Check: 1", "X-Late: evil"}},
		{name: "nominated by Connection", header: "Connection: X-Secret\r\n", announce: "X-Secret, X-Check", fields: []string{"X-Secret: evil", "X-Check: 1"}},
		{name: "spelled with '_'", announce: "X_Request_Id, X-Check", fields: []string{"X_Request_Id: evil", "X-Check: 1"}},
		{name: "an edge-owned name unannounced", announce: "X-Check", fields: []string{"X-Forwarded-For: evil", "X-Check: 1"}},
		{name: "an upgrade request (the tunnel)", header: "Connection: Upgrade\r\nUpgrade: websocket\r\n", announce: "X-Forwarded-For, X-Check",
			fields: []string{"X-Forwarded-For: evil", "X-Late: evil", "X-Check: 1"}, wantSection: "<none>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("first-%d", i)
			status, _ := trailerExchange(t, strings.TrimPrefix(e.url, "http://"), h1TrailerRequest(id, tc))
			got := u.received(id)
			if status != http.StatusOK || len(got) != 1 {
				t.Fatalf("status %d, the upstream received %d requests: %q", status, len(got), got)
			}
			announced, section := upstreamTrailer(got[0])
			wantSection := "X-Check: 1"
			if tc.wantSection != "" { // the tunnel announces the names, sends no values
				wantSection = tc.wantSection
			}
			if strings.Contains(got[0], "evil") {
				t.Errorf("the upstream received a spoofed field:\n%s", got[0])
			}
			if announced != "X-Check" || section != wantSection {
				t.Errorf("upstream's Trailer header %q, trailer section %q; want %q and %q\n%s", announced, section, "X-Check", wantSection, got[0])
			}
		})
	}
}
