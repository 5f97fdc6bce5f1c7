package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// switchHead is the 101 the upgrade tests' upstream answers with.
const switchHead = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"

// upgradeUpstream is a raw upstream, plain or behind the sidecar's TLS,
// that answers an upgrade request with the bytes its path names (modes
// below), then echoes the tunnel: at the client's half-close it writes
// "bye" and half-closes too. It counts connections, and the ones it saw
// end (the edge closed them).
type upgradeUpstream struct {
	addr         string
	conns, ended atomic.Int64
	bodies       chan string // the request bodies read, in order
}

// upgradeModes are the answers by path. "echo" modes go on as a tunnel.
var upgradeModes = map[string]struct {
	answer string
	echo   bool
}{
	"/switch":        {switchHead + "greeting", true},
	"/decline":       {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain", false},
	"/declineclose":  {"HTTP/1.1 403 Forbidden\r\nConnection: close, X-Name\r\nX-Name: hop\r\nContent-Length: 2\r\n\r\nno", false},
	"/other":         {"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nraw", true},
	"/bare":          {"HTTP/1.1 101 Switching Protocols\r\n\r\nraw", true},
	"/framed":        {"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\nhello", true},
	"/chunked":       {"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\nhello", true},
	"/informational": {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + switchHead + "greeting", true},
	"/closed":        {switchHead + "last", false},
	"/closedempty":   {switchHead, false},
}

func startUpgradeUpstream(t *testing.T, cfg *tls.Config) *upgradeUpstream {
	u := &upgradeUpstream{bodies: make(chan string, 4096)}
	u.addr = testutil.ServeConns(t, func(c net.Conn) {
		u.conns.Add(1)
		defer u.ended.Add(1)
		if cfg != nil {
			tc := tls.Server(c, cfg)
			defer tc.Close()
			if tc.Handshake() != nil {
				return
			}
			c = tc
		}
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		u.bodies <- string(body)
		m, ok := upgradeModes[req.URL.Path]
		if !ok {
			return
		}
		if _, err := io.WriteString(c, m.answer); err != nil || !m.echo {
			// Declined answers wait for the edge to close; the closing
			// modes end the connection at once.
			if !strings.HasPrefix(req.URL.Path, "/closed") {
				_, _ = io.Copy(io.Discard, br)
			}
			return
		}
		_, _ = io.Copy(c, br)
		_, _ = io.WriteString(c, "bye")
		_ = c.(interface{ CloseWrite() error }).CloseWrite()
		_, _ = io.Copy(io.Discard, br)
	})
	return u
}

// awaitEnded waits for the upstream to see n connections end.
func (u *upgradeUpstream) awaitEnded(t *testing.T, n int64) {
	t.Helper()
	testutil.WaitFor(t, func() bool { return u.ended.Load() >= n })
}

// upgradeRequest is an upgrade to websocket of path, as the tunnel sends it.
func upgradeRequest(t *testing.T, scheme, addr, path string, body string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(http.MethodGet, scheme+"://"+addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade, close")
	req.Header.Set("Upgrade", "websocket")
	req.Close = true
	return req
}

// upgradeTargets are the two kinds of H1: plain, and over the mesh's TLS.
func upgradeTargets(t *testing.T) []struct {
	name   string
	scheme string
	up     *upgradeUpstream
	h1     *H1
} {
	m := newMeshTLS(t)
	return []struct {
		name   string
		scheme string
		up     *upgradeUpstream
		h1     *H1
	}{
		{"plain", "http", startUpgradeUpstream(t, nil), newTestPool(t, 4, notATimeout)},
		{"tls", "https", startUpgradeUpstream(t, m.server), m.pool(t, 4, notATimeout, sidecarID)},
	}
}

// tunnel is what ReverseProxy needs of a 101's body.
type tunnel interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// TestH1TransportUpgrades: H1 sends an upgrade request itself, plain and
// over TLS. On a 101 to the protocol asked for, the body is the
// connection: the upstream's bytes sent with the 101 come first, both
// directions carry, and a half-close passes either way. Every other
// answer a hostile upstream can give is refused, or passed as an ordinary
// response, and the connection is closed, never pooled: the upstream sees
// every connection end, and no connection stays idle.
func TestH1TransportUpgrades(t *testing.T) {
	noLeaks(t)
	for _, tg := range upgradeTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			for i, tc := range []struct {
				name, path, body string
				// wantErr: the round trip fails; wantStatus otherwise.
				wantErr    string
				wantStatus int
				// The tunnel's bytes up to the upstream's end, the client
				// having sent "ping" and half-closed (101); the body (else).
				want string
				// The 1xx the trace saw.
				want1xx string
				// silent: the upstream closes at once; the client only reads.
				silent bool
				// unasked: the request asks for no upgrade.
				unasked bool
			}{
				{name: "bytes behind the 101", path: "/switch", wantStatus: 101, want: "greetingpingbye"},
				{name: "a request body, then the 101", path: "/switch", body: "payload", wantStatus: 101, want: "greetingpingbye"},
				{name: "101 with a body framing field", path: "/framed", wantStatus: 101, want: "hellopingbye"},
				{name: "101 with Transfer-Encoding", path: "/chunked", wantStatus: 101, want: "hellopingbye"},
				{name: "two 1xx before the 101", path: "/informational", wantStatus: 101, want: "greetingpingbye", want1xx: "100 103 "},
				{name: "101 then close", path: "/closed", wantStatus: 101, want: "last", silent: true},
				{name: "101 and close at once", path: "/closedempty", wantStatus: 101, want: "", silent: true},
				{name: "declined", path: "/decline", wantStatus: 200, want: "plain"},
				{name: "declined with Connection: close, X-Name", path: "/declineclose", wantStatus: 403, want: "no"},
				{name: "101 to another protocol", path: "/other", wantErr: `switched protocol "h2c" when "websocket" was requested`},
				{name: "101 to a request that asked for none", path: "/switch", unasked: true, wantErr: "unexpected 101"},
				{name: "101 without Upgrade", path: "/bare", wantErr: `switched protocol "" when "websocket" was requested`},
			} {
				t.Run(tc.name, func(t *testing.T) {
					req := upgradeRequest(t, tg.scheme, tg.up.addr, tc.path, tc.body)
					if tc.unasked {
						req.Header.Del("Upgrade")
						req.Header.Set("Connection", "close")
					}
					var got1xx strings.Builder
					req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
						Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
							fmt.Fprintf(&got1xx, "%d ", code)
							return nil
						},
					}))
					resp, err := tg.h1.RoundTrip(req)
					if tc.wantErr != "" {
						if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
							t.Fatalf("err %v, want %q", err, tc.wantErr)
						}
					} else {
						if err != nil {
							t.Fatal(err)
						}
						if resp.StatusCode != tc.wantStatus {
							t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
						}
						if got := readUpgraded(t, resp, tc.silent); got != tc.want {
							t.Fatalf("read %q, want %q", got, tc.want)
						}
						if got1xx.String() != tc.want1xx {
							t.Fatalf("1xx %q, want %q", got1xx.String(), tc.want1xx)
						}
					}
					if got := <-tg.up.bodies; got != tc.body {
						t.Fatalf("the upstream read the body %q, want %q", got, tc.body)
					}
					// Closed, not pooled: the upstream sees the end.
					tg.up.awaitEnded(t, int64(i+1))
					if n := idleConns(tg.h1); n != 0 {
						t.Fatalf("%d connections idle after an upgrade", n)
					}
				})
			}
		})
	}
}

// readUpgraded reads a response: for a 101, it checks the body is a tunnel
// without framing fields, and unless silent writes "ping" and half-closes,
// then reads to the upstream's end; otherwise it reads the body. It closes
// the body.
func readUpgraded(t *testing.T, resp *http.Response, silent bool) string {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The names a closing answer's Connection nominates stay named,
		// for the forwarder to drop (http.ReadResponse drops the field).
		if _, ok := resp.Header["X-Name"]; ok && !strings.EqualFold(resp.Header.Get("Connection"), "X-Name") {
			t.Fatalf("X-Name without the Connection field naming it: %v", resp.Header)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if _, ok := resp.Header["Content-Length"]; ok || resp.ContentLength != 0 || resp.TransferEncoding != nil {
		t.Fatalf("a 101 with framing: %v %d %v", resp.Header, resp.ContentLength, resp.TransferEncoding)
	}
	tun, ok := resp.Body.(tunnel)
	if !ok {
		t.Fatalf("a 101's body %T is no tunnel", resp.Body)
	}
	if !silent {
		if _, err := tun.Write([]byte("ping")); err != nil {
			t.Fatalf("writing the tunnel: %v", err)
		}
		if err := tun.CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
	}
	got, err := io.ReadAll(tun)
	if err != nil {
		t.Fatalf("reading the tunnel: %v", err)
	}
	return string(got)
}

func idleConns(t *H1) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, s := range t.idle {
		n += len(s)
	}
	return n
}

// TestH1TransportUpgradeRounds: 1,000 upgrades, 8 at once, each with bytes
// in the 101's own write and a round trip through the tunnel, mixed with
// ordinary requests on the same pool: every tunnel reads its own bytes in
// order, and no upgrade's connection ever serves another request (the
// upstream counts one connection per upgrade, and the ordinary requests
// never read a 101 or a tunnel's bytes).
func TestH1TransportUpgradeRounds(t *testing.T) {
	noLeaks(t)
	rounds := 1000
	if testing.Short() {
		rounds = 100
	}
	var upgrades atomic.Int64
	u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
		if req.Header.Get("Upgrade") == "" {
			_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
			return err == nil
		}
		upgrades.Add(1)
		if _, err := io.WriteString(c, switchHead+"hi:"+req.URL.Path[1:]+";"); err != nil {
			return false
		}
		_, _ = io.Copy(c, br)
		_ = c.(*net.TCPConn).CloseWrite()
		return false
	})
	h1 := newTestPool(t, 4, notATimeout)
	var wg sync.WaitGroup
	errs := make(chan error, rounds)
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < rounds; i += workers {
				if err := upgradeRound(t, h1, u.addr, i); err != nil {
					errs <- fmt.Errorf("round %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := upgrades.Load(); n != int64(rounds) {
		t.Fatalf("%d upgrades reached the upstream, want %d", n, rounds)
	}
	// At most one connection per upgrade plus the pool's own for the
	// ordinary requests: an upgrade's connection reused would show as an
	// ordinary request answered by a tunnel, or as fewer connections.
	if n := u.conns.Load(); n < int64(rounds) {
		t.Fatalf("%d connections for %d upgrades", n, rounds)
	}
}

func upgradeRound(t *testing.T, h1 *H1, addr string, i int) error {
	req := upgradeRequest(t, "http", addr, fmt.Sprintf("/u%d", i), "")
	resp, err := h1.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	tun := resp.Body.(tunnel)
	msg := fmt.Sprintf("ping%d", i)
	if _, err := io.WriteString(tun, msg); err != nil {
		return err
	}
	if err := tun.CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(tun)
	if want := fmt.Sprintf("hi:u%d;%s", i, msg); string(got) != want || err != nil {
		return fmt.Errorf("the tunnel read %q (%w), want %q", got, err, want)
	}
	// An ordinary request on the same pool right behind it.
	oreq, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/o%d", addr, i), nil)
	oresp, err := h1.RoundTrip(oreq)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(oresp.Body)
	oresp.Body.Close()
	if want := fmt.Sprintf("/o%d", i); string(b) != want || err != nil {
		return fmt.Errorf("the ordinary request read %q (%w), want %q", b, err, want)
	}
	return nil
}

// TestH1TransportUpgradeNeverEnds: a declined upgrade whose body never
// ends, and a tunnel the upstream never writes to, both end when the
// request's context does, and their connections close.
func TestH1TransportUpgradeNeverEnds(t *testing.T) {
	noLeaks(t)
	var ended atomic.Int64
	u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
		defer ended.Add(1)
		answer := "HTTP/1.1 200 OK\r\n\r\n" // delimited by the close, which never comes
		if req.URL.Path == "/switch" {
			answer = switchHead
		}
		if _, err := io.WriteString(c, answer); err != nil {
			return false
		}
		for req.URL.Path == "/stream" {
			if _, err := io.WriteString(c, "more "); err != nil {
				return false
			}
			time.Sleep(time.Millisecond)
		}
		_, _ = io.Copy(io.Discard, br)
		return false
	})
	h1 := newTestPool(t, 4, notATimeout)
	for i, path := range []string{"/stream", "/switch"} {
		t.Run(path, func(t *testing.T) {
			req := upgradeRequest(t, "http", u.addr, path, "")
			ctx, cancel := context.WithCancel(req.Context())
			defer cancel()
			resp, err := h1.RoundTrip(req.WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { resp.Body.Close() })
			read := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, resp.Body)
				read <- err
			}()
			time.Sleep(20 * time.Millisecond)
			cancel()
			select {
			case err := <-read:
				if err == nil {
					t.Fatal("the read ended as if the body were whole")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the read outlived the request's context")
			}
			// A tunnel's owner closes it (ReverseProxy does once its
			// copies end); a body closed itself at the failed read.
			resp.Body.Close()
			testutil.WaitFor(t, func() bool { return ended.Load() >= int64(i+1) })
		})
	}
}

// BenchmarkUpgradeHandshake: one upgrade (head out, 101 in, the connection
// handed over), one 4-byte round through the tunnel and the close, by H1
// and by the http.Transport that carried upgrades before (H1's fallback),
// each on a fresh connection as every upgrade is.
func BenchmarkUpgradeHandshake(b *testing.B) {
	addr := testutil.ServeConns(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		if _, err := io.WriteString(c, switchHead); err != nil {
			return
		}
		_, _ = io.Copy(c, br)
	})
	h1 := NewH1(&http.Transport{
		DialContext:        (&net.Dialer{Timeout: time.Second}).DialContext,
		DisableCompression: true,
	})
	b.Cleanup(h1.CloseIdleConnections)
	for _, tc := range []struct {
		name string
		rt   http.RoundTripper
	}{{"h1", h1}, {"http.Transport", h1.Fallback()}} {
		b.Run(tc.name, func(b *testing.B) {
			buf := make([]byte, 4)
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
				req.Header.Set("Connection", "Upgrade, close")
				req.Header.Set("Upgrade", "websocket")
				req.Close = true
				resp, err := tc.rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				rw := resp.Body.(io.ReadWriter)
				if _, err := rw.Write([]byte("ping")); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(rw, buf); err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		})
	}
}
