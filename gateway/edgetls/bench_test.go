package edgetls

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// Benchmarks: `make bench-tls`, or
//   go test -run '^$' -bench 'Handshake|KeepAlive' -benchmem ./gateway/edgetls/
// Client and server share the machine, so the numbers are for comparing the
// variants with each other, not absolute capacity.

func benchManager(b *testing.B) (*Manager, *testCA) {
	b.Helper()
	dir := b.TempDir()
	ca := newCA(b, "bench CA")
	c, k := ca.writePair(b, dir, "a", "api.example.com")
	// A few more certificates so SNI selection does real map work.
	certs := []routes.Certificate{{CertFile: c, KeyFile: k}}
	for _, n := range []string{"x", "y", "z"} {
		c, k := ca.writePair(b, dir, n, n+".example.org", "*."+n+".example.org")
		certs = append(certs, routes.Certificate{CertFile: c, KeyFile: k})
	}
	m, err := New(b.Context(), &routes.TLS{MinVersion: "1.2", Certificates: certs}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m, ca
}

// BenchmarkHandshake measures full TLS handshakes (no session resumption)
// per second through the Manager's GetCertificate.
func BenchmarkHandshake(b *testing.B) {
	for _, v := range []struct {
		name    string
		version uint16
	}{{"TLS1.3", tls.VersionTLS13}, {"TLS1.2", tls.VersionTLS12}} {
		b.Run(v.name, func(b *testing.B) {
			m, ca := benchManager(b)
			addr := serveTLS(b, m.TLSConfig(), okHandler())
			cfg := &tls.Config{ServerName: "api.example.com", RootCAs: ca.pool(), MinVersion: v.version, MaxVersion: v.version}
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c, err := tls.Dial("tcp", addr, cfg)
					if err != nil {
						b.Error(err)
						return
					}
					c.Close()
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
		})
	}
	b.Run("TCP-connect-only", func(b *testing.B) {
		// The floor: what a TCP connect and close cost without TLS.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		defer func() { ln.Close(); <-done }()
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Error(err)
					return
				}
				c.Close()
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "connects/s")
	})
}

// BenchmarkKeepAlive measures requests per second on kept-alive connections:
// plain HTTP/1.1, HTTP/1.1 over TLS and HTTP/2 over TLS.
func BenchmarkKeepAlive(b *testing.B) {
	variants := []struct {
		name  string
		tls   bool
		proto string
	}{
		{"plain-HTTP1.1", false, "HTTP/1.1"},
		{"TLS-HTTP1.1", true, "HTTP/1.1"},
		{"TLS-HTTP2", true, "HTTP/2.0"},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			var url string
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			if v.tls {
				m, ca := benchManager(b)
				url = "https://" + serveTLS(b, m.TLSConfig(), okHandler()) + "/"
				tr.TLSClientConfig = &tls.Config{ServerName: "api.example.com", RootCAs: ca.pool()}
				tr.ForceAttemptHTTP2 = v.proto == "HTTP/2.0"
				if !tr.ForceAttemptHTTP2 {
					tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
				}
			} else {
				url = "http://" + servePlain(b, okHandler()) + "/"
			}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr}
			// One request first, so connection set-up is not measured and the
			// protocol is the one intended.
			resp, err := cl.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.Proto != v.proto {
				b.Fatalf("protocol %s, want %s", resp.Proto, v.proto)
			}
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := cl.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}

func servePlain(b *testing.B, h http.Handler) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ErrorLog: discardLog(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.Errorf("serving: %v", err)
		}
	}()
	b.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// BenchmarkGetCertificate measures certificate selection alone (exact,
// wildcard and default), the part of a handshake this package adds.
func BenchmarkGetCertificate(b *testing.B) {
	m, _ := benchManager(b)
	for _, sni := range []string{"api.example.com", "shop.y.example.org", "unknown.test"} {
		b.Run(sni, func(b *testing.B) {
			hello := &tls.ClientHelloInfo{ServerName: sni}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.getCertificate(hello); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
