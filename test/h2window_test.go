package test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// An HTTP/2 client that never opens its flow-control window (SETTINGS
// INITIAL_WINDOW_SIZE 0, no WINDOW_UPDATE) cannot be sent the body of a
// refusal. The stream must still be released: the edge's write-stall
// bound (server.write_stall_timeout) resets it rather than leave the
// handler waiting for a window that never opens. Also with a request body
// announced and never sent. h2c on the plain listener.
func TestH2RefusalToClosedWindowIsReleased(t *testing.T) {
	up := newHeaderUpstream(t)
	keys := writeTemp(t, "keys.txt", "partner:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\n")
	e := startEdge(t, header+fmt.Sprintf(`server: {write_stall_timeout: 300ms, body_read_timeout: 30s}
authenticators:
  partners: {api_key: {header: X-API-Key, keys_file: %q}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: auth, match: {path_prefix: /auth}, auth: partners, upstream: u}
`, keys, up.addr()))
	for _, tc := range []struct {
		name, method, path string
		body               bool // HEADERS without END_STREAM, content-length 1000, no DATA
		want               string
	}{
		{"404, no body", "GET", "/nothing-here", false, "404"},
		{"401, no body", "GET", "/auth", false, "401"},
		{"401, body never sent", "POST", "/auth", true, "401"},
		{"404, body never sent", "POST", "/nothing-here", true, "404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", e.Addr("http"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// A guard against a hang, far beyond the 300 ms bound.
			_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
			if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
				t.Fatal(err)
			}
			fr := http2.NewFramer(conn, conn)
			if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
				t.Fatal(err)
			}
			var block bytes.Buffer
			enc := hpack.NewEncoder(&block)
			for _, f := range []hpack.HeaderField{{Name: ":method", Value: tc.method}, {Name: ":scheme", Value: "http"},
				{Name: ":authority", Value: "api.example.com"}, {Name: ":path", Value: tc.path}} {
				_ = enc.WriteField(f)
			}
			if tc.body {
				_ = enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "1000"})
			}
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: !tc.body, EndHeaders: true}); err != nil {
				t.Fatal(err)
			}
			status := ""
			dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
				if f.Name == ":status" {
					status = f.Value
				}
			})
			for {
				f, err := fr.ReadFrame()
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("stream never released (status %q seen): the refusal waits for a window that never opens", status)
				}
				if err != nil {
					// The connection closed: released too.
					t.Logf("connection closed after status %q: %v", status, err)
					return
				}
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if !f.IsAck() {
						_ = fr.WriteSettingsAck()
					}
				case *http2.HeadersFrame:
					if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
						t.Fatal(err)
					}
					if status != tc.want {
						t.Fatalf("status %q, want %s", status, tc.want)
					}
				case *http2.DataFrame:
					if len(f.Data()) > 0 {
						t.Fatalf("%d bytes of DATA sent into a closed window", len(f.Data()))
					}
				case *http2.RSTStreamFrame:
					if status != tc.want {
						t.Fatalf("stream reset (%v) before the %s head", f.ErrCode, tc.want)
					}
					t.Logf("status %s, then RST_STREAM %v", status, f.ErrCode)
					return
				case *http2.GoAwayFrame:
					t.Logf("GOAWAY %v after status %q", f.ErrCode, status)
					return
				}
			}
		})
	}
}
