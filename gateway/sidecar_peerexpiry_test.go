package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// A caller's certificate is checked when its connection is made; the
// connection can then be kept open for as long as the caller keeps it busy.
// Short-lived certificates are what bounds a stolen key (there is no
// revocation), and removing a root from the bundle is how a compromised CA
// is cut off: neither may be sidestepped by a connection made earlier.
// Every request on a connection made while the caller's certificate was
// valid and trusted must be refused once it no longer is: the certificate
// expired (an injected clock moves past it), or its root left the bundle
// file. Over HTTP/1.1 and HTTP/2. Before the fix the sidecar served both on
// the old connection.
func TestSidecarRefusesCallerNoLongerValidOnOpenConnection(t *testing.T) {
	tests := []struct {
		desc string
		// change makes the caller's certificate invalid for the sidecar
		// (nil: nothing changes, the control case).
		change  func(t *testing.T, e *expiryEnv)
		refused bool
	}{
		{desc: "unchanged, half an hour later", change: func(t *testing.T, e *expiryEnv) { e.offset.Store(int64(time.Hour / 2)) }},
		{desc: "certificate expired", refused: true, change: func(t *testing.T, e *expiryEnv) { e.offset.Store(int64(2 * time.Hour)) }},
		{desc: "root removed from the bundle", refused: true, change: func(t *testing.T, e *expiryEnv) {
			writeFile(t, e.bundle, string(e.own.BundlePEM()))
			// The reload has happened once a new connection is refused.
			deadline := time.Now().Add(10 * time.Second)
			for {
				c := e.client(false)
				_, err := c.Get(e.url)
				c.CloseIdleConnections()
				if err != nil {
					return
				}
				if time.Now().After(deadline) {
					t.Fatal("the sidecar still accepts new connections from the removed root")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}},
	}
	for _, h2 := range []bool{false, true} {
		for _, tc := range tests {
			name := tc.desc + "/http1"
			if h2 {
				name = tc.desc + "/h2"
			}
			t.Run(name, func(t *testing.T) {
				e := newExpiryEnv(t, h2)
				c := e.client(h2)
				defer c.CloseIdleConnections()
				if code, _ := e.get(t, c); code != http.StatusOK {
					t.Fatalf("first request: %d", code)
				}
				tc.change(t, e)
				before := e.served.Load()
				code, reused := e.get(t, c)
				if !reused {
					t.Fatal("the second request did not reuse the connection: the test proves nothing")
				}
				if !tc.refused {
					if code != http.StatusOK || e.served.Load() != before+1 {
						t.Fatalf("got %d, service saw %d requests more; want 200 and 1", code, e.served.Load()-before)
					}
					return
				}
				if code != http.StatusForbidden {
					t.Fatalf("a caller no longer valid got %d on its open connection, want 403", code)
				}
				if n := e.served.Load() - before; n != 0 {
					t.Fatalf("the service received %d requests from a caller no longer valid", n)
				}
			})
		}
	}
}

// expiryEnv is a sidecar whose bundle holds two roots (its own CA's, and
// the caller's CA's), whose clock is time.Now plus offset, and a caller
// with a one-hour certificate of the second CA.
type expiryEnv struct {
	own, other *meshtest.CA
	bundle     string
	offset     atomic.Int64
	served     atomic.Int64
	url        string
	callerCert tls.Certificate
}

func newExpiryEnv(t *testing.T, h2 bool) *expiryEnv {
	e := &expiryEnv{own: meshtest.NewCA(t, "example.org"), other: meshtest.NewCA(t, "example.org")}
	dir := t.TempDir()
	files := e.own.IssueFiles(dir, ordersID)
	e.bundle = filepath.Join(dir, "bundle.pem")
	writeFile(t, e.bundle, string(e.own.BundlePEM())+string(e.other.BundlePEM()))
	e.callerCert = e.other.Issue(edgeID, meshtest.TTL(time.Hour)).TLS
	svc := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.served.Add(1)
		_, _ = io.WriteString(w, r.Header.Get(PeerIDHeader))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = svc.Serve(ln) }()
	t.Cleanup(func() { _ = svc.Close() })

	s := startSidecarClock(t, sidecarConfig(files, ln.Addr().String(), []string{edgeID}, nil),
		func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) })
	e.url = "https://" + s.Addr("inbound") + "/"
	return e
}

// client is a caller with one keep-alive connection.
func (e *expiryEnv) client(h2 bool) *http.Client {
	protos := []string{"http/1.1"}
	if h2 {
		protos = []string{"h2"}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxConnsPerHost: 1, ForceAttemptHTTP2: h2,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: protos, Certificates: []tls.Certificate{e.callerCert}},
	}}
}

// get sends a request with c and says whether it went on a reused
// connection.
func (e *expiryEnv) get(t *testing.T, c *http.Client) (code int, reused bool) {
	t.Helper()
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, e.url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.ProtoMajor == 2 != (c.Transport.(*http.Transport).ForceAttemptHTTP2) {
		t.Fatalf("answered over %s", resp.Proto)
	}
	return resp.StatusCode, reused
}
