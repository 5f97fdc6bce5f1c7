package transport

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

const (
	sidecarID = "spiffe://example.org/ns/shop/sa/payments"
	edgeID    = "spiffe://example.org/ns/edge/sa/gateway"
)

// meshTLS is the mTLS of the mesh hop: a sidecar's server configuration
// and the edge's identity source, from one test CA.
type meshTLS struct {
	ca     *meshtest.CA
	server *tls.Config
	client *mesh.Source
	files  meshtest.Files
}

func newMeshTLS(t *testing.T) *meshTLS {
	ca := meshtest.NewCA(t, "example.org")
	srv, _ := ca.Source(sidecarID)
	cli, f := ca.Source(edgeID)
	return &meshTLS{ca: ca, server: mesh.ServerConfig(srv), client: cli, files: f}
}

// pool is the edge's H1 toward a sidecar that must be want, built as
// proxy.NewTransportPool builds it.
func (m *meshTLS) pool(t *testing.T, maxIdle int, timeout time.Duration, want string) *H1 {
	t.Helper()
	return m.poolAt(t, maxIdle, timeout, want, nil)
}

// transport is the http.Transport of an upstream toward a sidecar that
// must be id, as proxy.NewTransportPool builds it; each pool below
// changes what its case needs.
func (m *meshTLS) transport(id mesh.ID) *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		TLSClientConfig:       mesh.ClientConfig(m.client, id),
		TLSHandshakeTimeout:   10 * time.Second,
		ForceAttemptHTTP2:     true,
	}
}

// poolAt is pool holding certificates to the clock now (nil: time.Now).
func (m *meshTLS) poolAt(t *testing.T, maxIdle int, timeout time.Duration, want string, now func() time.Time) *H1 {
	t.Helper()
	id, err := mesh.ParseID(want)
	if err != nil {
		t.Fatal(err)
	}
	tr := m.transport(id)
	tr.MaxIdleConnsPerHost = maxIdle
	tr.ResponseHeaderTimeout = timeout
	tr.ForceAttemptHTTP2 = false
	h1 := NewH1TLS(tr, now)
	t.Cleanup(h1.CloseIdleConnections)
	return h1
}

// serve runs h behind the sidecar's mTLS (maxVersion 0: TLS 1.3) and
// counts the connections that completed a handshake.
func (m *meshTLS) serve(t *testing.T, maxVersion uint16, h http.HandlerFunc) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.server.Clone()
	cfg.MaxVersion = maxVersion
	var conns atomic.Int64
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateActive {
			conns.Add(1) // per request; StateNew precedes the handshake
		}
	}}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(tls.NewListener(ln, cfg)) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return ln.Addr().String(), &conns
}

// A sidecar that presents another identity than the upstream's
// mesh_identity is refused during the handshake: the request, body and
// all, never reaches it.
func TestH1TLSRefusesAnUnexpectedSidecar(t *testing.T) {
	m := newMeshTLS(t)
	var got atomic.Int64
	addr, _ := m.serve(t, 0, func(w http.ResponseWriter, r *http.Request) { got.Add(1) })
	h1 := m.pool(t, 4, notATimeout, "spiffe://example.org/ns/shop/sa/orders")
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, _ := http.NewRequest(method, "https://"+addr+"/", strings.NewReader("secret"))
		resp, err := h1.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s: the wrong sidecar was accepted", method)
		}
		if !strings.Contains(err.Error(), "refusing server") {
			t.Fatalf("%s: %v, want the identity refused", method, err)
		}
	}
	if n := got.Load(); n != 0 {
		t.Fatalf("the sidecar received %d requests", n)
	}
}

// The client certificate is asked for at every handshake
// (GetClientCertificate): one rotated on disk is the one new connections
// present.
func TestH1TLSClientCertificateRotation(t *testing.T) {
	m := newMeshTLS(t)
	addr, _ := m.serve(t, 0, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].SerialNumber.String())
	})
	h1 := m.pool(t, 4, notATimeout, sidecarID)
	serial := func() string {
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
		req.Close = true // a new connection for every request
		resp, err := h1.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	before := serial()
	m.ca.Issue(edgeID).WriteFiles(t, dirOf(m.files.Cert), "svid")
	if err := m.client.Reload(); err != nil {
		t.Fatal(err)
	}
	if after := serial(); after == before {
		t.Fatalf("the new connection still presented certificate %s", before)
	}
}

func dirOf(path string) string { return path[:strings.LastIndexByte(path, '/')] }

// renewed is a workload whose certificate renew replaces.
type renewed struct {
	src   *mesh.Source
	files meshtest.Files
	id    string
}

// renew gives each workload a new day-long certificate and has its
// source load it, as every workload's certificate is renewed before it
// expires.
func renew(t *testing.T, ca *meshtest.CA, ws ...renewed) {
	t.Helper()
	for _, w := range ws {
		ca.Issue(w.id, meshtest.TTL(24*time.Hour)).WriteFiles(t, dirOf(w.files.Cert), "svid")
		if err := w.src.Reload(); err != nil {
			t.Fatal(err)
		}
	}
}

// Keep-alive works over TLS 1.3, whose session tickets the sidecar sends
// after the handshake, and over TLS 1.2: sequential requests share one
// connection, so what crypto/tls handles itself is not taken for stray
// bytes.
func TestH1TLSReusesConnections(t *testing.T) {
	for _, v := range []struct {
		name string
		max  uint16
	}{{"TLS 1.3", 0}, {"TLS 1.2", tls.VersionTLS12}} {
		t.Run(v.name, func(t *testing.T) {
			m := newMeshTLS(t)
			var conns sync.Map
			var n atomic.Int64
			addr, _ := m.serve(t, v.max, func(w http.ResponseWriter, r *http.Request) {
				if _, loaded := conns.LoadOrStore(r.RemoteAddr, true); !loaded {
					n.Add(1)
				}
				_, _ = io.WriteString(w, "ok")
			})
			h1 := m.pool(t, 4, notATimeout, sidecarID)
			for i := range 200 {
				req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
				resp, err := h1.RoundTrip(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if got := n.Load(); got != 1 {
				t.Fatalf("200 sequential requests used %d connections, want 1", got)
			}
		})
	}
}

// Requests with bodies over TLS: what the sidecar received is checked, not
// only the answer.
func TestH1TLSRequestBodies(t *testing.T) {
	m := newMeshTLS(t)
	big := strings.Repeat("0123456789abcdef", 1<<14) // 256 KiB
	sum := sha256.Sum256([]byte(big))
	want := hex.EncodeToString(sum[:])
	addr, _ := m.serve(t, 0, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/early":
			// Answers without reading the body.
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		}
		h := sha256.New()
		_, _ = io.Copy(h, r.Body)
		_, _ = io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
	})
	h1 := m.pool(t, 4, notATimeout, sidecarID)
	for _, tc := range []struct {
		name, path string
		expect     bool
		chunked    bool
		status     int
	}{
		{"content-length", "/", false, false, 200},
		{"chunked", "/", false, true, 200},
		{"100-continue", "/", true, false, 200},
		{"early answer", "/early", false, false, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 5 {
				var body io.Reader = strings.NewReader(big)
				if tc.chunked {
					body = io.MultiReader(body) // unknown length
				}
				req, _ := http.NewRequest(http.MethodPost, "https://"+addr+tc.path, body)
				if tc.expect {
					req.Header.Set("Expect", "100-continue")
				}
				resp, err := h1.RoundTrip(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Fatalf("request %d: status %d, want %d", i, resp.StatusCode, tc.status)
				}
				if tc.status == 200 && string(b) != want {
					t.Fatalf("request %d: the sidecar received a body with sha256 %s, want %s", i, b, want)
				}
			}
		})
	}
	t.Run("response header timeout", func(t *testing.T) {
		h1 := m.pool(t, 4, 50*time.Millisecond, sidecarID)
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/slow", nil)
		_, err := h1.RoundTrip(req)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err = %v, want a timeout", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		dead := ln.Addr().String()
		ln.Close()
		req, _ := http.NewRequest(http.MethodGet, "https://"+dead+"/", nil)
		if _, err := h1.RoundTrip(req); err == nil {
			t.Fatal("a closed port answered")
		}
	})
	t.Run("handshake bounded by the context", func(t *testing.T) {
		// A listener that accepts and never answers the ClientHello.
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+ln.Addr().String()+"/", nil)
		if _, err := h1.RoundTrip(req); err == nil {
			t.Fatal("a silent listener answered")
		}
	})
}

// A pooled connection is not reused once a certificate its handshake
// exchanged has expired: the sidecar's (it is no longer verified), or the
// edge's own (the sidecar refuses a caller whose certificate expired on an
// open connection: reusing it would cost a request a 403). Both have been
// rotated on disk before the pool's clock moves past the old one, as a
// renewal does: the connection made next presents (or is presented) the
// current certificate and is reused. The control case stays within both
// certificates. Before the fix the first connection served all three.
func TestH1TLSRetiresConnectionsPastTheirCertificates(t *testing.T) {
	tests := []struct {
		desc                 string
		serverTTL, clientTTL time.Duration
		later                time.Duration
		connections          int64
	}{
		{desc: "both valid", serverTTL: time.Hour, clientTTL: 2 * time.Hour, later: 30 * time.Minute, connections: 1},
		{desc: "the sidecar's certificate expired", serverTTL: time.Hour, clientTTL: 24 * time.Hour, later: 2 * time.Hour, connections: 2},
		{desc: "the edge's own certificate expired", serverTTL: 24 * time.Hour, clientTTL: time.Hour, later: 2 * time.Hour, connections: 2},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			ca := meshtest.NewCA(t, "example.org")
			srv, sf := ca.Source(sidecarID, meshtest.TTL(tc.serverTTL))
			cli, cf := ca.Source(edgeID, meshtest.TTL(tc.clientTTL))
			m := &meshTLS{ca: ca, server: mesh.ServerConfig(srv), client: cli, files: cf}
			var conns sync.Map
			var n atomic.Int64
			addr, _ := m.serve(t, 0, func(w http.ResponseWriter, r *http.Request) {
				if _, loaded := conns.LoadOrStore(r.RemoteAddr, true); !loaded {
					n.Add(1)
				}
				_, _ = io.WriteString(w, "ok")
			})
			clk := testutil.NewFakeClockAt(time.Now())
			h1 := m.poolAt(t, 4, notATimeout, sidecarID, clk.Now)
			for i := range 3 {
				if i == 1 {
					renew(t, ca, renewed{srv, sf, sidecarID}, renewed{cli, cf, edgeID})
					clk.Advance(tc.later)
				}
				req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
				resp, err := h1.RoundTrip(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if got := n.Load(); got != tc.connections {
				t.Fatalf("3 requests used %d connections, want %d", got, tc.connections)
			}
		})
	}
}
