package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/transport"
)

// switchingUpstream answers every request with a 101 to the protocol its
// query names and reports when the edge closed the connection.
func switchingUpstream(t *testing.T) (addr string, closed <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", req.URL.RawQuery)
				_, _ = io.Copy(io.Discard, br)
				done <- struct{}{}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), done
}

// A 101 to another protocol than the one asked for is refused by one rule
// (transport.CheckSwitch), whichever transport read it: the upstream
// client checks its own 101s, the tunnel those of http.Transport (h2 and
// h2c upstreams), and either way the upstream's connection is closed
// rather than left to the upstream. A 101 to the protocol asked for goes
// through.
func TestTunnelSwitchRule(t *testing.T) {
	addr, closed := switchingUpstream(t)
	for _, tr := range []struct {
		desc    string
		rt      http.RoundTripper
		checked bool // its 101s are checked by the transport itself
	}{
		{"upstream client", transport.NewH1(&http.Transport{DialContext: (&net.Dialer{}).DialContext}), true},
		{"http.Transport", &http.Transport{}, false},
	} {
		for _, tc := range []struct {
			desc, switchTo, wantErr string
		}{
			{"asked protocol", "websocket", ""},
			{"asked protocol, other case", "WebSocket", ""},
			{"other protocol", "h2c", `switched protocol "h2c" when "websocket" was requested`},
			{"no protocol", "", `switched protocol "" when "websocket" was requested`},
		} {
			t.Run(tr.desc+"/"+tc.desc, func(t *testing.T) {
				req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/?"+tc.switchTo, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
				res, err := tunnelTransport{rt: tr.rt}.RoundTrip(req)
				if tc.wantErr == "" {
					if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
						t.Fatalf("got %v %v, want the 101", res, err)
					}
					if got := transport.SwitchChecked(res); got != tr.checked {
						t.Errorf("SwitchChecked = %v, want %v", got, tr.checked)
					}
					res.Body.Close()
				} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v %v, want the error %q", res, err, tc.wantErr)
				}
				select {
				case <-closed:
				case <-time.After(10 * time.Second):
					t.Fatal("the upstream's connection was left open")
				}
			})
		}
		if c, ok := tr.rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}
