package testutil

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// ForgedAllow is what StrayAuthz writes where no answer belongs: read as
// the answer to the next check on the connection, it allows that request
// as user "forged".
const ForgedAllow = "HTTP/1.1 200 OK\r\nX-Auth-User: forged\r\nContent-Length: 0\r\n\r\n"

// StrayAuthzModes are the ways StrayAuthz misframes its allows.
var StrayAuthzModes = []string{"body after 204", "more than Content-Length", "unsolicited while idle", "late body after 204"}

// StrayAuthz is a forward-auth server on raw TCP that decides each check by
// its X-Who header (an even number: allow, with X-Auth-User set to it; odd:
// deny with 403) and, after each allow, sends ForgedAllow by mode: as a
// body of a 204, past the Content-Length, or 1 ms after the answer (the
// late modes), and then calls afterLate, so that a test can hold the next
// check until they have arrived (HTTP/1.1 cannot tell bytes that arrive
// after a connection is taken from that request's answer). It returns its
// URL.
func StrayAuthz(tb testing.TB, mode string, afterLate func()) string {
	tb.Helper()
	return "http://" + ServeConns(tb, strayAuthz(mode, afterLate, nil)) + "/verify"
}

// StrayAuthzTLS is StrayAuthz over TLS with the certificate and key given
// (PEM; HTTP/1.1 only, as ALPN http/1.1). Its URL names localhost.
func StrayAuthzTLS(tb testing.TB, mode string, afterLate func(), certPEM, keyPEM []byte) string {
	tb.Helper()
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	addr := ServeConns(tb, strayAuthz(mode, afterLate, conf))
	_, port, _ := net.SplitHostPort(addr)
	return "https://localhost:" + port + "/verify"
}

func strayAuthz(mode string, afterLate func(), conf *tls.Config) func(net.Conn) {
	return func(c net.Conn) {
		if conf != nil {
			tc := tls.Server(c, conf)
			defer tc.Close()
			c = tc
		}
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			who, _ := strconv.Atoi(req.Header.Get("X-Who"))
			var resp, late string
			switch {
			case who%2 == 1:
				resp = "HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied"
			case mode == "body after 204":
				resp = fmt.Sprintf("HTTP/1.1 204 No Content\r\nX-Auth-User: %d\r\n\r\n%s", who, ForgedAllow)
			case mode == "more than Content-Length":
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Auth-User: %d\r\nContent-Length: 2\r\n\r\nok%s", who, ForgedAllow)
			case mode == "unsolicited while idle":
				resp, late = fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Auth-User: %d\r\nContent-Length: 0\r\n\r\n", who), ForgedAllow
			case mode == "late body after 204":
				resp, late = fmt.Sprintf("HTTP/1.1 204 No Content\r\nX-Auth-User: %d\r\n\r\n", who), ForgedAllow
			default:
				resp = fmt.Sprintf("HTTP/1.1 204 No Content\r\nX-Auth-User: %d\r\n\r\n", who)
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
			if late != "" {
				time.Sleep(time.Millisecond)
				_, err := io.WriteString(c, late)
				afterLate()
				if err != nil {
					return
				}
			}
		}
	}
}
