package transport

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
)

// trailerSection is a trailer section of size bytes as sent: fields of
// 100-byte values, then a padding field, then the empty line; sep is what
// separates a name from its value (": " as H1's writer writes it, or ":").
func trailerSection(size int, sep string) string {
	var b strings.Builder
	for i := 0; ; i++ {
		f := fmt.Sprintf("X-Fill-%02d%s%s\r\n", i, sep, strings.Repeat("v", 100))
		if size-b.Len()-len(f)-len("\r\n") < len("X-Pad"+sep+"\r\n")+1 {
			break
		}
		b.WriteString(f)
	}
	pad := size - b.Len() - len("X-Pad"+sep+"\r\n") - len("\r\n")
	b.WriteString("X-Pad" + sep + strings.Repeat("p", pad) + "\r\n\r\n")
	if b.Len() != size {
		panic(fmt.Sprintf("trailerSection(%d) is %d bytes", size, b.Len()))
	}
	return b.String()
}

// One rule for an upstream's trailer section on the limit's edge: H1
// reading it, and CheckTrailer (what directProxy and the upgrade tunnel
// apply to every response, h2c upstreams' included) on the fields read,
// give the same answer. A section H1's reader takes is never one
// net/http's client refuses (it is stricter, never looser). Before the
// rule was one, H1 counted the bytes as sent and the forwarder the fields
// as "Name: value": a section written "Name:value" of 4096 bytes passed H1
// and was cut by the forwarder, depending on which of them looked.
func TestTrailerLimitBoundary(t *testing.T) {
	tests := []struct {
		name    string
		section string
		ok      bool
	}{
		{"4095 bytes", trailerSection(4095, ": "), true},
		{"4096 bytes", trailerSection(4096, ": "), true},
		{"4097 bytes", trailerSection(4097, ": "), false},
		{"4095 bytes sent without spaces", trailerSection(4095, ":"), false}, // 4132 counted
		{"4096 bytes sent without spaces", trailerSection(4096, ":"), false},
		{"4059 bytes sent without spaces", trailerSection(4059, ":"), true}, // 37 fields: 4096 counted
		{"4060 bytes sent without spaces", trailerSection(4060, ":"), false},
	}
	addr := testutil.ServeConns(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			i, err := strconv.Atoi(strings.TrimPrefix(req.URL.Path, "/"))
			if err != nil || i < 0 || i >= len(tests) {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Pad\r\n\r\n5\r\nhello\r\n0\r\n"+tests[i].section)
		}
	})
	h1t := newTestPool(t, 4, notATimeout)
	ref := &http.Transport{}
	t.Cleanup(ref.CloseIdleConnections)
	read := func(rt http.RoundTripper, i int) (http.Header, error) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/%d", addr, i), nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); err != nil {
			return nil, err
		}
		return resp.Trailer, nil
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := read(h1t, i)
			if (err == nil) != tt.ok {
				t.Fatalf("H1 read the section: error %v, want ok=%v", err, tt.ok)
			}
			refGot, refErr := read(ref, i)
			if refErr != nil && err == nil {
				t.Fatalf("H1 took a section net/http refuses: %v", refErr)
			}
			if refErr == nil {
				// What the forwarder checks of a response another
				// transport read: the same fields, the same answer.
				if cerr := CheckTrailer(refGot); (cerr == nil) != tt.ok {
					t.Fatalf("CheckTrailer on net/http's fields (%d bytes counted): %v, want ok=%v", TrailerSize(refGot), cerr, tt.ok)
				}
			}
			if err == nil && TrailerSize(got) > TrailerLimit {
				t.Fatalf("H1 took %d bytes", TrailerSize(got))
			}
		})
	}
}
