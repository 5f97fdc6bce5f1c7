package transport

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
)

// An answer without Content-Length or chunked framing ends where the
// upstream closes the connection. Over TLS an orderly end says so with a
// close_notify alert; a connection that ends without one (the upstream's
// process died and the kernel sent the FIN, or someone on the path cut the
// connection, RFC 8446 6.1's truncation attack) has cut the answer short, and
// the body must fail instead of ending as if whole. crypto/tls reads an
// EOF at a record boundary as the end, without the alert, so the transport
// has to tell the two apart itself. Each case runs on TLS 1.3 and 1.2, with
// the body in one record and in several.
func TestH1TLSCloseDelimitedBodyCutWithoutCloseNotify(t *testing.T) {
	noLeaks(t)
	const part = "0123456789abcdef"
	tests := []struct {
		desc string
		// end finishes the upstream's connection after the body.
		end     func(tc *tls.Conn, raw net.Conn)
		whole   bool // the client must read the body whole, without error
		reset   bool // a reset may also discard the head before it is read
		records int
	}{
		{desc: "close_notify", end: func(tc *tls.Conn, raw net.Conn) { _ = tc.Close() }, whole: true, records: 1},
		{desc: "close_notify after several records", end: func(tc *tls.Conn, raw net.Conn) { _ = tc.Close() }, whole: true, records: 40},
		{desc: "close_notify, then the FIN much later", end: func(tc *tls.Conn, raw net.Conn) {
			_ = tc.CloseWrite()
			_, _ = io.Copy(io.Discard, raw) // until the client closes
			_ = raw.Close()
		}, whole: true, records: 3},
		{desc: "FIN without close_notify", end: func(tc *tls.Conn, raw net.Conn) { _ = raw.Close() }, records: 1},
		{desc: "FIN without close_notify after several records", end: func(tc *tls.Conn, raw net.Conn) { _ = raw.Close() }, records: 40},
		{desc: "reset", end: func(tc *tls.Conn, raw net.Conn) {
			_ = raw.(*net.TCPConn).SetLinger(0)
			_ = raw.Close()
		}, reset: true, records: 3},
	}
	for _, v := range []struct {
		name string
		max  uint16
	}{{"TLS 1.3", 0}, {"TLS 1.2", tls.VersionTLS12}} {
		for _, tt := range tests {
			t.Run(v.name+"/"+tt.desc, func(t *testing.T) {
				m := newMeshTLS(t)
				cfg := m.server.Clone()
				cfg.MaxVersion = v.max
				addr := testutil.ServeConns(t, func(raw net.Conn) {
					defer raw.Close()
					tc := tls.Server(raw, cfg)
					if _, err := http.ReadRequest(bufio.NewReader(tc)); err != nil {
						return
					}
					// No Content-Length, no chunked: the body ends at the close.
					if _, err := io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"); err != nil {
						return
					}
					for range tt.records {
						if _, err := io.WriteString(tc, part); err != nil {
							return
						}
					}
					tt.end(tc, raw)
				})
				h1 := m.pool(t, 4, notATimeout, sidecarID)
				for i := range 20 {
					req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
					resp, err := h1.RoundTrip(req)
					if err != nil {
						if tt.whole || !tt.reset {
							t.Fatalf("round %d: %v", i, err)
						}
						continue // the reset came before the head was read: nothing passed
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					want := strings.Repeat(part, tt.records)
					if tt.whole {
						if err != nil || string(b) != want {
							t.Fatalf("round %d: read %d bytes, err %v; want the %d bytes whole", i, len(b), err, len(want))
						}
						continue
					}
					if err == nil {
						t.Fatalf("round %d: a body cut without close_notify read as whole (%d bytes)", i, len(b))
					}
					if !tt.reset && !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Fatalf("round %d: err %v, want io.ErrUnexpectedEOF", i, err)
					}
				}
			})
		}
	}
}
