package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/transport"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// notATimeout is the response-header timeout of the tests that are not
// about timeouts: long enough that a machine loaded by a full -race run
// never trips it.
const notATimeout = 30 * time.Second

// newTestPool builds an upstream pool the way the edge does.
func newTestPool(t *testing.T, maxIdle int, timeout time.Duration) *transport.H1 {
	t.Helper()
	pool, err := proxy.NewTransportPool("t", routes.Upstream{
		Scheme: "http", Protocol: routes.DefaultProtocol, MaxIdlePerHost: maxIdle,
		ConnectTimeout: routes.Duration(time.Second), Timeout: routes.Duration(timeout),
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h1, ok := pool.Transport.(*transport.H1)
	if !ok {
		t.Fatalf("plain http1 upstream got %T, want the calling-goroutine transport", pool.Transport)
	}
	t.Cleanup(pool.CloseIdle)
	return h1
}

// A plain HTTP/1.1 upstream gets the calling-goroutine transport; the
// transport package's tests build it the same way.
func TestPlainUpstreamUsesH1(t *testing.T) {
	newTestPool(t, 4, notATimeout)
}

func TestH1TransportErrors(t *testing.T) {
	release := make(chan struct{})
	hang := testutil.ServeConns(t, func(c net.Conn) {
		_, _ = http.ReadRequest(bufio.NewReader(c)) // what was asked does not matter here
		<-release
	})
	// Registered after ServeConns, so it runs before ServeConns waits for
	// its handlers.
	t.Cleanup(func() { close(release) })
	unexpected101 := testutil.ServeConns(t, func(c net.Conn) {
		_, _ = http.ReadRequest(bufio.NewReader(c)) // what was asked does not matter here
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
	})
	malformed := testutil.ServeConns(t, func(c net.Conn) {
		_, _ = http.ReadRequest(bufio.NewReader(c)) // what was asked does not matter here
		io.WriteString(c, "HTTP/1.1 2OO OK\r\n\r\n")
	})
	reset := testutil.ServeConns(t, func(c net.Conn) {
		_, _ = http.ReadRequest(bufio.NewReader(c)) // what was asked does not matter here
		_ = c.(*net.TCPConn).SetLinger(0)           // close with RST
	})
	refused := func() string {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		a := ln.Addr().String()
		ln.Close()
		return a
	}()

	t.Run("header timeout is a timeout", func(t *testing.T) {
		h1 := newTestPool(t, 4, 50*time.Millisecond)
		_, _, err := testutil.RoundTripGet(t, h1, context.Background(), "http://"+hang+"/")
		var nerr net.Error
		if !errors.As(err, &nerr) || !nerr.Timeout() {
			t.Fatalf("got %v, want a timeout", err)
		}
		if k := proxy.Classify(context.Background(), err); k != proxy.FailTimeout {
			t.Fatalf("classified %d, want failTimeout", k)
		}
	})
	t.Run("client leaves", func(t *testing.T) {
		h1 := newTestPool(t, 4, 0)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		if _, _, err := testutil.RoundTripGet(t, h1, ctx, "http://"+hang+"/"); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	for _, tc := range []struct {
		name, addr string
		kind       proxy.FailKind
	}{
		{"unexpected 101", unexpected101, proxy.FailOther},
		{"malformed status line", malformed, proxy.FailOther},
		{"reset before headers", reset, proxy.FailReset},
		{"connection refused", refused, proxy.FailConnect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h1 := newTestPool(t, 4, notATimeout)
			_, _, err := testutil.RoundTripGet(t, h1, context.Background(), "http://"+tc.addr+"/")
			if err == nil {
				t.Fatal("no error")
			}
			if k := proxy.Classify(context.Background(), err); k != tc.kind {
				t.Fatalf("%v classified %d, want %d", err, k, tc.kind)
			}
		})
	}
	t.Run("header injection refused", func(t *testing.T) {
		h1 := newTestPool(t, 4, notATimeout)
		if _, _, err := testutil.RoundTripGet(t, h1, context.Background(), "http://"+malformed+"/", "X-A", "v\r\nX-Injected: 1"); err == nil || !strings.Contains(err.Error(), "invalid header") {
			t.Fatalf("got %v, want an invalid header error", err)
		}
	})
}
