package edgetls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
	"github.com/prometheus/client_golang/prometheus"
)

func newManager(t testing.TB, cfg *routes.TLS, opts Options) *Manager {
	t.Helper()
	m, err := New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestNewBadConfig(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "bad-config CA")
	certFile, keyFile := ca.writePair(t, dir, "a", "a.example.com")
	_, otherKey := ca.writePair(t, dir, "b", "b.example.com")
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, []byte("not pem"))
	good := []routes.Certificate{{CertFile: certFile, KeyFile: keyFile}}
	acme := func(mod func(*routes.ACME)) *routes.ACME {
		a := &routes.ACME{Hosts: []string{"a.example.com"}, Cache: "dir", CacheDir: filepath.Join(dir, "acme"),
			DirectoryURL: "https://127.0.0.1:1/dir"}
		if mod != nil {
			mod(a)
		}
		return a
	}
	tests := []struct {
		name string
		cfg  *routes.TLS
		opts Options
		want string
	}{
		{"nil section", nil, Options{}, "no tls section"},
		{"nothing to serve", &routes.TLS{}, Options{}, "needs certificates or acme"},
		{"missing cert file", &routes.TLS{Certificates: []routes.Certificate{{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: keyFile}}}, Options{}, "reading cert_file " + filepath.Join(dir, "nope.pem")},
		{"missing key file", &routes.TLS{Certificates: []routes.Certificate{{CertFile: certFile, KeyFile: filepath.Join(dir, "nokey.pem")}}}, Options{}, "reading key_file " + filepath.Join(dir, "nokey.pem")},
		{"key of another certificate", &routes.TLS{Certificates: []routes.Certificate{{CertFile: certFile, KeyFile: otherKey}}}, Options{}, "loading " + certFile + " with " + otherKey},
		{"garbage certificate", &routes.TLS{Certificates: []routes.Certificate{{CertFile: garbage, KeyFile: keyFile}}}, Options{}, "loading " + garbage},
		{"min version 1.1", &routes.TLS{MinVersion: "1.1", Certificates: good}, Options{}, `tls.min_version: must be "1.2" or "1.3"`},
		{"client auth unknown", &routes.TLS{Certificates: good, ClientAuth: "maybe", ClientCAFile: certFile}, Options{}, "tls.client_auth: must be"},
		{"client auth without CA", &routes.TLS{Certificates: good, ClientAuth: "require"}, Options{}, "needs tls.client_ca_file"},
		{"client CA garbage", &routes.TLS{Certificates: good, ClientCAFile: garbage}, Options{}, "tls.client_ca_file: " + garbage + " holds no PEM certificate"},
		{"client CA missing", &routes.TLS{Certificates: good, ClientCAFile: filepath.Join(dir, "noca.pem")}, Options{}, "tls.client_ca_file: reading"},
		{"negative HSTS", &routes.TLS{Certificates: good, HSTS: &routes.HSTS{MaxAge: -1}}, Options{}, "tls.hsts.max_age"},
		{"acme dir without cache_dir", &routes.TLS{ACME: acme(func(a *routes.ACME) { a.CacheDir = "" })}, Options{}, "tls.acme.cache_dir"},
		{"acme cache_dir through a file", &routes.TLS{ACME: acme(func(a *routes.ACME) { a.CacheDir = filepath.Join(garbage, "acme") })}, Options{}, "tls.acme.cache_dir: " + filepath.Join(garbage, "acme") + ": " + garbage + " is not a directory"},
		{"acme cache_dir is a file", &routes.TLS{ACME: acme(func(a *routes.ACME) { a.CacheDir = garbage })}, Options{}, "is not a directory"},
		{"acme redis without client", &routes.TLS{ACME: acme(func(a *routes.ACME) { a.Cache = "redis" })}, Options{}, "no redis client"},
		{"acme unknown cache", &routes.TLS{ACME: acme(func(a *routes.ACME) { a.Cache = "s3" })}, Options{}, `unknown cache "s3"`},
		{"acme http directory", &routes.TLS{ACME: acme(func(a *routes.ACME) { a.DirectoryURL = "http://ca/dir" })}, Options{}, "tls.acme.directory_url"},
		{"acme roots missing", &routes.TLS{ACME: acme(func(a *routes.ACME) { a.CARootsFile = filepath.Join(dir, "roots.pem") })}, Options{}, "tls.acme.ca_roots_file: reading " + filepath.Join(dir, "roots.pem")},
		{"acme roots garbage", &routes.TLS{ACME: acme(func(a *routes.ACME) { a.CARootsFile = garbage })}, Options{}, "tls.acme.ca_roots_file: " + garbage + " holds no PEM"},
		{"on demand bad ask", &routes.TLS{ACME: acme(func(a *routes.ACME) { a.OnDemand = &routes.OnDemand{Ask: "ftp://x", Interval: 1, Burst: 1} })}, Options{}, "tls.acme.on_demand.ask"},
		{"on demand zero burst", &routes.TLS{ACME: acme(func(a *routes.ACME) { a.OnDemand = &routes.OnDemand{Ask: "http://x/ask", Interval: 1} })}, Options{}, "tls.acme.on_demand.burst"},
		{"on demand zero interval", &routes.TLS{ACME: acme(func(a *routes.ACME) { a.OnDemand = &routes.OnDemand{Ask: "http://x/ask", Burst: 1} })}, Options{}, "tls.acme.on_demand.interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(context.Background(), tt.cfg, tt.opts)
			if err == nil {
				m.Close()
				t.Fatalf("accepted, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := New(ctx, &routes.TLS{Certificates: good}, Options{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

// A Manager is built for every load of the routes file, also for one that
// is refused later (an error elsewhere in the file) and for `causeway
// validate`: building one must leave nothing on disk. The ACME cache
// directory is made by the first certificate stored in it.
func TestACMECacheDirCreatedOnlyByAStore(t *testing.T) {
	for _, tt := range []struct {
		name string
		sub  []string // the cache directory below a temporary one
	}{
		{"directory", []string{"acme"}},
		{"nested directories", []string{"var", "lib", "causeway", "acme"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			cacheDir := filepath.Join(append([]string{base}, tt.sub...)...)
			m, err := New(context.Background(), &routes.TLS{ACME: &routes.ACME{Hosts: []string{"a.example.com"}, Cache: "dir",
				CacheDir: cacheDir, DirectoryURL: "https://127.0.0.1:1/dir"}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			m.Close()
			if _, err := os.Stat(filepath.Join(base, tt.sub[0])); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("building and closing a Manager left %s behind (stat: %v)", filepath.Join(base, tt.sub[0]), err)
			}
			// The cache makes the directory, owner-only, when it stores.
			if err := m.acme.cache.Put(context.Background(), "a.example.com", []byte("x")); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(cacheDir)
			if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
				t.Fatalf("after a store: %v, %v", fi, err)
			}
		})
	}
}

func TestSNISelection(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "sni CA")
	aCert, aKey := ca.writePair(t, dir, "a", "api.example.com")
	wCert, wKey := ca.writePair(t, dir, "wild", "*.example.com", "example.com")
	oCert, oKey := ca.writePair(t, dir, "other", "other.test", "api.example.com") // api.example.com: listed first in a wins
	m := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{
		{CertFile: aCert, KeyFile: aKey}, {CertFile: wCert, KeyFile: wKey}, {CertFile: oCert, KeyFile: oKey},
	}}, Options{})
	addr := serveTLS(t, m.TLSConfig(), okHandler())

	tests := []struct {
		sni      string
		wantName string // the first DNS name of the certificate served
	}{
		{"api.example.com", "api.example.com"},
		{"API.EXAMPLE.COM", "api.example.com"},
		{"shop.example.com", "*.example.com"},
		{"example.com", "*.example.com"},
		{"shop.example.com.", "*.example.com"},
		{"a.b.example.com", "api.example.com"}, // wildcards cover one label: default
		{"other.test", "other.test"},
		{"unknown.test", "api.example.com"}, // default: the first certificate
		{"", "api.example.com"},             // no SNI (clients dialling an IP)
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("sni=%q", tt.sni), func(t *testing.T) {
			st, err := handshake(addr, &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := st.PeerCertificates[0].DNSNames[0]; got != tt.wantName {
				t.Fatalf("served the certificate for %q, want %q", got, tt.wantName)
			}
		})
	}
	t.Run("wildcard verifies for a real client", func(t *testing.T) {
		if _, err := handshake(addr, &tls.Config{ServerName: "shop.example.com", RootCAs: ca.pool()}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestProtocolVersionsAndALPN(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "versions CA")
	c, k := ca.writePair(t, dir, "a", "api.example.com")
	certs := []routes.Certificate{{CertFile: c, KeyFile: k}}
	m12 := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: certs}, Options{})
	m13 := newManager(t, &routes.TLS{MinVersion: "1.3", Certificates: certs}, Options{})
	addr12 := serveTLS(t, m12.TLSConfig(), okHandler())
	addr13 := serveTLS(t, m13.TLSConfig(), okHandler())

	tests := []struct {
		name     string
		addr     string
		min, max uint16
		suites   []uint16
		protos   []string
		wantOK   bool
		wantALPN string
	}{
		{"TLS 1.0 refused", addr12, tls.VersionTLS10, tls.VersionTLS10, nil, nil, false, ""},
		{"TLS 1.1 refused", addr12, tls.VersionTLS11, tls.VersionTLS11, nil, nil, false, ""},
		{"TLS 1.2 accepted", addr12, tls.VersionTLS12, tls.VersionTLS12, nil, nil, true, ""},
		{"TLS 1.3 accepted", addr12, tls.VersionTLS13, tls.VersionTLS13, nil, nil, true, ""},
		{"CBC suite refused on 1.2", addr12, tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}, nil, false, ""},
		{"TLS 1.2 refused when min is 1.3", addr13, tls.VersionTLS12, tls.VersionTLS12, nil, nil, false, ""},
		{"TLS 1.3 with min 1.3", addr13, tls.VersionTLS13, tls.VersionTLS13, nil, nil, true, ""},
		{"ALPN prefers h2", addr12, tls.VersionTLS12, tls.VersionTLS13, nil, []string{"h2", "http/1.1"}, true, "h2"},
		{"ALPN falls back to http/1.1", addr12, tls.VersionTLS12, tls.VersionTLS13, nil, []string{"http/1.1"}, true, "http/1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := handshake(tt.addr, &tls.Config{ServerName: "api.example.com", RootCAs: ca.pool(),
				MinVersion: tt.min, MaxVersion: tt.max, CipherSuites: tt.suites, NextProtos: tt.protos})
			if tt.wantOK != (err == nil) {
				t.Fatalf("handshake error %v, want success %v", err, tt.wantOK)
			}
			if err == nil && st.NegotiatedProtocol != tt.wantALPN {
				t.Fatalf("ALPN %q, want %q", st.NegotiatedProtocol, tt.wantALPN)
			}
		})
	}
	t.Run("HTTP/2 request", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "api.example.com", RootCAs: ca.pool()}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get("https://" + addr12 + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Proto != "HTTP/2.0" {
			t.Fatalf("proto %s, want HTTP/2.0", resp.Proto)
		}
	})
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA := newCA(t, "server CA")
	clientCA := newCA(t, "client CA")
	strangerCA := newCA(t, "stranger CA")
	c, k := serverCA.writePair(t, dir, "a", "api.example.com")
	caFile := filepath.Join(dir, "clients.pem")
	writeFile(t, caFile, clientCA.pem)
	good := clientCA.clientCert(t, "partner-1")
	stranger := strangerCA.clientCert(t, "intruder")

	for _, mode := range []string{"require", "verify_if_given"} {
		m := newManager(t, &routes.TLS{MinVersion: "1.2", ClientAuth: mode, ClientCAFile: caFile,
			Certificates: []routes.Certificate{{CertFile: c, KeyFile: k}}}, Options{})
		addr := serveTLS(t, m.TLSConfig(), okHandler())
		tests := []struct {
			name        string
			cert        *tls.Certificate
			wantOK      bool
			wantSubject string
		}{
			{"trusted client certificate", &good, true, "CN=partner-1,O=Causeway Tests"},
			{"certificate from another CA", &stranger, false, ""},
			{"no certificate", nil, mode == "verify_if_given", ""},
		}
		for _, tt := range tests {
			t.Run(mode+"/"+tt.name, func(t *testing.T) {
				tcfg := &tls.Config{ServerName: "api.example.com", RootCAs: serverCA.pool()}
				if tt.cert != nil {
					// Present the certificate even when the server's list of
					// acceptable CAs does not name its issuer, as an attacker would.
					cert := tt.cert
					tcfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
				}
				tr := &http.Transport{TLSClientConfig: tcfg, ForceAttemptHTTP2: true}
				defer tr.CloseIdleConnections()
				resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/")
				if !tt.wantOK {
					if err == nil {
						resp.Body.Close()
						t.Fatal("request succeeded, want the handshake refused")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if got := resp.Header.Get("X-Client-Subject"); got != tt.wantSubject {
					t.Fatalf("ClientSubject %q, want %q", got, tt.wantSubject)
				}
			})
		}
	}
	t.Run("ClientSubject without TLS", func(t *testing.T) {
		if s, ok := ClientSubject(httptest.NewRequest(http.MethodGet, "/", nil)); ok || s != "" {
			t.Fatalf("got %q %v for a plain request", s, ok)
		}
	})
}

func TestHTTPHandlerRedirect(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "redirect CA")
	c, k := ca.writePair(t, dir, "a", "api.example.com")
	static := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{{CertFile: c, KeyFile: k}}}, Options{})
	withACME := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{{CertFile: c, KeyFile: k}},
		ACME: &routes.ACME{Hosts: []string{"api.example.com"}, Cache: "dir", CacheDir: filepath.Join(dir, "acme"), DirectoryURL: "https://127.0.0.1:1/dir"}}, Options{})

	tests := []struct {
		name       string
		m          *Manager
		port       string
		method     string
		target     string
		host       string
		wantStatus int
		wantLoc    string
	}{
		{"GET keeps path and query", static, "8443", "GET", "/orders/1?x=1&y=%2F", "api.example.com", 308, "https://api.example.com:8443/orders/1?x=1&y=%2F"},
		{"port 443 is left out", static, "443", "GET", "/a", "api.example.com", 308, "https://api.example.com/a"},
		{"empty port is left out", static, "", "GET", "/a", "api.example.com", 308, "https://api.example.com/a"},
		{"client's port is replaced", static, "8443", "GET", "/", "api.example.com:8080", 308, "https://api.example.com:8443/"},
		{"POST keeps its method with 308", static, "443", "POST", "/orders", "api.example.com", 308, "https://api.example.com/orders"},
		{"IPv6 literal", static, "8443", "GET", "/", "[::1]:8080", 308, "https://[::1]:8443/"},
		{"IPv4 literal", static, "443", "GET", "/", "127.0.0.1:8080", 308, "https://127.0.0.1/"},
		{"bad host refused", static, "443", "GET", "/", "evil.com/x@y", 400, ""},
		{"empty host refused", static, "443", "GET", "/", "", 400, ""},
		{"challenge path without ACME redirects", static, "443", "GET", "/.well-known/acme-challenge/tok", "api.example.com", 308, "https://api.example.com/.well-known/acme-challenge/tok"},
		{"challenge path with ACME is not redirected", withACME, "443", "GET", "/.well-known/acme-challenge/unknown-token", "api.example.com", 404, ""},
		{"other paths with ACME redirect", withACME, "8443", "GET", "/x", "api.example.com", 308, "https://api.example.com:8443/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "http://placeholder"+tt.target, nil)
			req.Host = tt.host
			rec := httptest.NewRecorder()
			tt.m.HTTPHandler(tt.port).ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", rec.Code, tt.wantStatus, rec.Body.String())
			}
			if got := rec.Header().Get("Location"); got != tt.wantLoc {
				t.Fatalf("Location %q, want %q", got, tt.wantLoc)
			}
		})
	}
}

func TestHSTS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "hsts CA")
	c, k := ca.writePair(t, dir, "a", "api.example.com")
	certs := []routes.Certificate{{CertFile: c, KeyFile: k}}
	tlsReq := httptest.NewRequest(http.MethodGet, "https://api.example.com/", nil)
	plainReq := httptest.NewRequest(http.MethodGet, "http://api.example.com/", nil)
	tests := []struct {
		name string
		hsts *routes.HSTS
		req  *http.Request
		want string
	}{
		{"off", nil, tlsReq, ""},
		{"max-age only", &routes.HSTS{MaxAge: routes.Duration(time.Hour)}, tlsReq, "max-age=3600"},
		{"subdomains and preload", &routes.HSTS{MaxAge: routes.Duration(365 * 24 * time.Hour), IncludeSubdomains: true, Preload: true}, tlsReq, "max-age=31536000; includeSubDomains; preload"},
		{"never over plain HTTP", &routes.HSTS{MaxAge: routes.Duration(time.Hour)}, plainReq, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: certs, HSTS: tt.hsts}, Options{})
			rec := httptest.NewRecorder()
			m.WrapHSTS(okHandler()).ServeHTTP(rec, tt.req)
			if got := rec.Header().Get("Strict-Transport-Security"); got != tt.want {
				t.Fatalf("Strict-Transport-Security %q, want %q", got, tt.want)
			}
		})
	}
}

func TestExpiryMetric(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "expiry CA")
	aCert, aKey := ca.writePair(t, dir, "a", "api.example.com")
	bCert, bKey := ca.writePair(t, dir, "b", "*.example.com")
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "causeway_certificate_expiry_timestamp_seconds", Help: "h"}, []string{"name"})
	reloaded := make(chan error, 8)
	m := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{{CertFile: aCert, KeyFile: aKey}, {CertFile: bCert, KeyFile: bKey}}},
		Options{Expiry: g, OnReload: func(err error) { reloaded <- err }})
	leaf := m.static.Load().certs[0].Leaf
	want := map[string]int64{"api.example.com": leaf.NotAfter.Unix(), "*.example.com": m.static.Load().certs[1].Leaf.NotAfter.Unix()}
	if got := gaugeValues(t, g); !maps.Equal(got, want) {
		t.Fatalf("series %v, want %v", got, want)
	}
	// The second file now holds a certificate for another name: its old
	// series goes, the new one comes.
	c, k := ca.leaf(t, "shop.test", false, "shop.test")
	writeFile(t, bKey, k)
	writeFile(t, bCert, c)
	waitReload(t, reloaded)
	want = map[string]int64{"api.example.com": leaf.NotAfter.Unix(), "shop.test": m.static.Load().certs[1].Leaf.NotAfter.Unix()}
	if got := gaugeValues(t, g); !maps.Equal(got, want) {
		t.Fatalf("after rotation: series %v, want %v", got, want)
	}
}

// gaugeValues gathers g through a private registry: name label -> value.
func gaugeValues(t testing.TB, g *prometheus.GaugeVec) map[string]int64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(g); err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister(g)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = int64(m.GetGauge().GetValue())
		}
	}
	return out
}

// waitReload waits until a reload succeeded; failed ones happen when an
// event arrives between the key's and the certificate's rename.
func waitReload(t testing.TB, ch <-chan error) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case err := <-ch:
			if err == nil {
				return
			}
		case <-deadline:
			t.Fatal("certificates were not reloaded within 30s of the file change")
		}
	}
}

// TestRotationUnderLoad replaces the certificate while clients make requests
// on new and on kept-alive connections, and checks that no request fails and
// new connections get the new certificate.
func TestRotationUnderLoad(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "rotation CA")
	c, k := ca.writePair(t, dir, "a", "api.example.com")
	reloaded := make(chan error, 64)
	m := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{{CertFile: c, KeyFile: k}}},
		Options{OnReload: func(err error) { reloaded <- err }})
	addr := serveTLS(t, m.TLSConfig(), okHandler())
	oldSerial := m.static.Load().certs[0].Leaf.SerialNumber

	var (
		stop     atomic.Bool
		requests atomic.Int64
		failures atomic.Int64
		wg       sync.WaitGroup
		firstErr sync.Once
		errMsg   atomic.Value
		progress = make(chan struct{}, 1024)
	)
	client := func(keepAlive bool) {
		defer wg.Done()
		tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "api.example.com", RootCAs: ca.pool()},
			DisableKeepAlives: !keepAlive, ForceAttemptHTTP2: keepAlive}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		for !stop.Load() {
			resp, err := cl.Get("https://" + addr + "/")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			requests.Add(1)
			select {
			case progress <- struct{}{}:
			default:
			}
			if err != nil {
				failures.Add(1)
				firstErr.Do(func() { errMsg.Store(err.Error()) })
			}
		}
	}
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go client(false)
		go client(true)
	}
	// awaitRequests lets n requests complete, so every rotation happens under load.
	awaitRequests := func(n int) {
		for range n {
			select {
			case <-progress:
			case <-time.After(30 * time.Second):
				t.Fatal("clients made no progress for 30s")
			}
		}
	}
	// Three rotations, each waiting for the reload to take effect.
	var serials []string
	for i := 0; i < 3; i++ {
		awaitRequests(200)
		cp, kp := ca.leaf(t, "api.example.com", false, "api.example.com")
		writeFile(t, k, kp)
		writeFile(t, c, cp)
		waitReload(t, reloaded)
		serials = append(serials, m.static.Load().certs[0].Leaf.SerialNumber.String())
	}
	awaitRequests(200)
	stop.Store(true)
	wg.Wait()
	if f := failures.Load(); f > 0 {
		t.Fatalf("%d of %d requests failed during rotation; first: %v", f, requests.Load(), errMsg.Load())
	}
	st, err := handshake(addr, &tls.Config{ServerName: "api.example.com", RootCAs: ca.pool()})
	if err != nil {
		t.Fatal(err)
	}
	got := st.PeerCertificates[0].SerialNumber
	if got.Cmp(oldSerial) == 0 || got.String() != serials[len(serials)-1] {
		t.Fatalf("a new connection got serial %v, want the last rotated one %s", got, serials[len(serials)-1])
	}
	t.Logf("%d requests across 3 rotations, 0 failed", requests.Load())
}

func TestRotationKeepsOldOnBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "bad rotation CA")
	c, k := ca.writePair(t, dir, "a", "api.example.com")
	reloaded := make(chan error, 8)
	m := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{{CertFile: c, KeyFile: k}}},
		Options{OnReload: func(err error) { reloaded <- err }})
	before := m.static.Load()
	writeFile(t, c, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"))
	select {
	case err := <-reloaded:
		if err == nil || !strings.Contains(err.Error(), c) {
			t.Fatalf("reload error %v, want one naming %s", err, c)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no reload attempt within 30s")
	}
	if m.static.Load() != before {
		t.Fatal("a broken file replaced the certificates being served")
	}
	if err := m.Reload(); err == nil {
		t.Fatal("Reload accepted a broken certificate file")
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "close CA")
	c, k := ca.writePair(t, dir, "a", "api.example.com")
	m, err := New(context.Background(), &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{{CertFile: c, KeyFile: k}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := m.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
}

func TestTokenBucket(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := newTokenBucket(2, time.Minute, func() time.Time { return now })
	steps := []struct {
		advance time.Duration
		want    bool
	}{
		{0, true}, {0, true}, {0, false}, // burst of 2, then empty
		{30 * time.Second, false}, // half a token
		{30 * time.Second, true},  // one whole token
		{0, false},
		{10 * time.Minute, true}, {0, true}, {0, false}, // refills to burst, not beyond
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := b.allow(); got != s.want {
			t.Fatalf("step %d (+%s): allow %v, want %v", i, s.advance, got, s.want)
		}
	}
}

func TestStaticSetUnchanged(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "stamp CA")
	c, k := ca.writePair(t, dir, "a", "api.example.com")
	set, err := loadStatic(&routes.TLS{Certificates: []routes.Certificate{{CertFile: c, KeyFile: k}}})
	if err != nil {
		t.Fatal(err)
	}
	if !set.unchanged() {
		t.Fatal("fresh set reports a change")
	}
	// Touching a file (new time, same content) is no change.
	if err := os.Chtimes(c, time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !set.unchanged() {
		t.Fatal("a touched but identical file reported as a change")
	}
	// Same size, same time, other content: a change.
	data, err := os.ReadFile(c)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(c)
	data[len(data)/2] ^= 1
	if err := os.WriteFile(c, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(c, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if set.unchanged() {
		t.Fatal("changed content with the same size and time not seen")
	}
	if err := os.Remove(k); err != nil {
		t.Fatal(err)
	}
	if set.unchanged() {
		t.Fatal("removed file not seen as changed")
	}
}

// TestSwapManagersUnderOneListener is the gateway's reload path: one
// listener whose GetConfigForClient delegates to the current Manager; a new
// Manager (other certificate, client auth switched on) is swapped in and the
// old one closed, with no new listener.
func TestSwapManagersUnderOneListener(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "swap CA")
	clientCA := newCA(t, "swap client CA")
	caFile := filepath.Join(dir, "clients.pem")
	writeFile(t, caFile, clientCA.pem)
	c1, k1 := ca.writePair(t, dir, "one", "api.example.com")
	c2, k2 := ca.writePair(t, dir, "two", "api.example.com", "new.example.com")
	m1 := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{{CertFile: c1, KeyFile: k1}}}, Options{})
	var current atomic.Pointer[Manager]
	current.Store(m1)
	outer := &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { return current.Load().GetConfigForClient(h) }}
	addr := serveTLS(t, outer, okHandler())

	get := func(withClientCert bool) (*http.Response, error) {
		cfg := &tls.Config{ServerName: "api.example.com", RootCAs: ca.pool()}
		if withClientCert {
			cfg.Certificates = []tls.Certificate{clientCA.clientCert(t, "partner")}
		}
		tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	resp, err := get(false)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Proto != "HTTP/2.0" || len(resp.TLS.PeerCertificates[0].DNSNames) != 1 {
		t.Fatalf("before the swap: %s, names %v", resp.Proto, resp.TLS.PeerCertificates[0].DNSNames)
	}

	m2 := newManager(t, &routes.TLS{MinVersion: "1.2", ClientCAFile: caFile, ClientAuth: "require",
		Certificates: []routes.Certificate{{CertFile: c2, KeyFile: k2}}}, Options{})
	current.Store(m2)
	m1.Close()
	if _, err := get(false); err == nil {
		t.Fatal("after the swap a request without a client certificate succeeded")
	}
	resp, err = get(true)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.TLS.PeerCertificates[0].DNSNames; len(got) != 2 {
		t.Fatalf("after the swap served names %v, want the new certificate", got)
	}
	if s := resp.Header.Get("X-Client-Subject"); s != "CN=partner,O=Causeway Tests" {
		t.Fatalf("client subject %q", s)
	}
}

// TestCertFromCache reads cache entries in autocert's layout (key, then
// chain): only an unexpired certificate for the name, with its key, is
// served.
func TestCertFromCache(t *testing.T) {
	ca := newCA(t, "cache entry CA")
	cert, key := ca.leaf(t, "a.example.com", false, "a.example.com")
	entry := append(append([]byte{}, key...), cert...)
	leaf := firstCertificate(entry)
	if leaf == nil {
		t.Fatal("no certificate found in a well-formed entry")
	}
	_, otherKey := ca.leaf(t, "a.example.com", false, "a.example.com")
	tests := []struct {
		name string
		data []byte
		host string
		at   time.Time
		want bool
	}{
		{"valid", entry, "a.example.com", leaf.NotAfter.Add(-time.Minute), true},
		{"a second before expiry", entry, "a.example.com", leaf.NotAfter.Add(-time.Second), true},
		{"at expiry", entry, "a.example.com", leaf.NotAfter, false},
		{"expired", entry, "a.example.com", leaf.NotAfter.Add(time.Second), false},
		{"another name", entry, "b.example.com", leaf.NotBefore, false},
		{"another key", append(append([]byte{}, otherKey...), cert...), "a.example.com", leaf.NotBefore, false},
		{"key only", key, "a.example.com", leaf.NotBefore, false},
		{"garbage", []byte("not pem"), "a.example.com", leaf.NotBefore, false},
		{"broken certificate", append(append([]byte{}, key...), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")...), "a.example.com", leaf.NotBefore, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := certFromCache(tt.data, tt.host, tt.at)
			if got := err == nil; got != tt.want {
				t.Fatalf("usable %v (%v), want %v", got, err, tt.want)
			}
			if tt.want && c.Leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
				t.Fatalf("serial %v, want %v", c.Leaf.SerialNumber, leaf.SerialNumber)
			}
		})
	}
}

// TestOnDemandAsk covers the ask endpoint's side of on-demand TLS without a
// CA: refusals serve the default certificate, are remembered for a minute of
// the injected clock, and names that are not host names are never asked about.
func TestOnDemandAsk(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ask CA")
	c, k := ca.writePair(t, dir, "default", "default.example.com")
	var asks sync.Map // domain -> *atomic.Int64
	askCount := func(d string) int64 {
		v, _ := asks.LoadOrStore(d, new(atomic.Int64))
		return v.(*atomic.Int64).Load()
	}
	failing := atomic.Bool{}
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := r.URL.Query().Get("domain")
		v, _ := asks.LoadOrStore(d, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		if failing.Load() {
			panic(http.ErrAbortHandler) // the connection drops: no answer
		}
		w.WriteHeader(http.StatusForbidden)
	}))
	defer ask.Close()
	var (
		clockMu sync.Mutex
		now     = time.Now()
	)
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	advance := func(d time.Duration) { clockMu.Lock(); now = now.Add(d); clockMu.Unlock() }
	m := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{{CertFile: c, KeyFile: k}},
		ACME: &routes.ACME{Cache: "dir", CacheDir: filepath.Join(dir, "acme"), DirectoryURL: "https://127.0.0.1:1/dir",
			OnDemand: &routes.OnDemand{Ask: ask.URL, Interval: routes.Duration(time.Minute), Burst: 1}}},
		Options{Now: clock, HTTPClient: ask.Client()})
	addr := serveTLS(t, m.TLSConfig(), okHandler())
	served := func(sni string) string {
		t.Helper()
		st, err := handshake(addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("handshake %q: %v", sni, err)
		}
		return st.PeerCertificates[0].DNSNames[0]
	}
	steps := []struct {
		name     string
		sni      string
		advance  time.Duration
		fail     bool
		domain   string
		wantAsks int64
	}{
		{"refused name gets the default certificate", "no.example.com", 0, false, "no.example.com", 1},
		{"refusal is remembered", "no.example.com", 30 * time.Second, false, "no.example.com", 1},
		{"and forgotten after a minute", "no.example.com", 31 * time.Second, false, "no.example.com", 2},
		{"single label is never asked about", "intranet", 0, false, "intranet", 0},
		{"IP address is never asked about", "10.0.0.1", 0, false, "10.0.0.1", 0},
		// A dropped connection may be retried once by net/http itself, so
		// these count calls made since the previous step.
		{"a failed ask is not remembered", "flaky.example.com", 0, true, "flaky.example.com", -1},
		{"so the next handshake asks again", "flaky.example.com", 0, true, "flaky.example.com", -1},
	}
	var last int64
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			advance(s.advance)
			failing.Store(s.fail)
			if got := served(s.sni); got != "default.example.com" {
				t.Fatalf("served %q, want the default certificate", got)
			}
			n := askCount(s.domain)
			switch {
			case s.wantAsks < 0 && n <= last:
				t.Fatalf("ask endpoint not called again for %q (%d calls in all)", s.domain, n)
			case s.wantAsks >= 0 && n != s.wantAsks:
				t.Fatalf("ask endpoint called %d times for %q, want %d", n, s.domain, s.wantAsks)
			}
			last = n
		})
	}
	if n := m.acme.orders.Load(); n != 0 {
		t.Fatalf("%d orders, want 0", n)
	}
}

// TestClientCARotation rewrites tls.client_ca_file under a running manager:
// a client certificate of the new CA is accepted and one of the old refused
// once the reload lands, and a bundle that does not parse keeps the last good
// roots, as a broken certificate file keeps the last good certificate.
func TestClientCARotation(t *testing.T) {
	dir := t.TempDir()
	serverCA := newCA(t, "server CA")
	oldCA, nextCA := newCA(t, "old client CA"), newCA(t, "new client CA")
	c, k := serverCA.writePair(t, dir, "a", "api.example.com")
	caFile := filepath.Join(dir, "clients.pem")
	writeFile(t, caFile, oldCA.pem)
	reloaded := make(chan error, 16)
	m := newManager(t, &routes.TLS{MinVersion: "1.2", ClientAuth: "require", ClientCAFile: caFile,
		Certificates: []routes.Certificate{{CertFile: c, KeyFile: k}}},
		Options{OnReload: func(err error) { reloaded <- err }})
	addr := serveTLS(t, m.TLSConfig(), okHandler())
	oldClient, newClient := oldCA.clientCert(t, "old-partner"), nextCA.clientCert(t, "new-partner")
	accepted := func(cert tls.Certificate) bool {
		tcfg := &tls.Config{ServerName: "api.example.com", RootCAs: serverCA.pool(),
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
		tr := &http.Transport{TLSClientConfig: tcfg}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	steps := []struct {
		name         string
		write        []byte
		wantReloadOK bool
		oldOK, newOK bool // whose client certificates are accepted after it
	}{
		{"rotated to the new CA", nextCA.pem, true, false, true},
		{"a bundle that does not parse keeps the new CA", []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"), false, false, true},
		{"both CAs during a hand-over", append(append([]byte{}, oldCA.pem...), nextCA.pem...), true, true, true},
	}
	if !accepted(oldClient) || accepted(newClient) {
		t.Fatal("before rotation: want the old CA's client accepted and the new CA's refused")
	}
	for _, s := range steps {
		writeFile(t, caFile, s.write)
		// Each write is several events in the folder (the temporary file,
		// its rename), and each event retries a bundle that does not parse,
		// so a refusal can be reported more than once: wait for the first
		// success, or for the first refusal where one is wanted.
		if s.wantReloadOK {
			waitReload(t, reloaded)
		} else {
			select {
			case err := <-reloaded:
				if err == nil || !strings.Contains(err.Error(), caFile) {
					t.Fatalf("%s: reload error %v, want one naming %s", s.name, err, caFile)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: no reload attempt within 30s of the change", s.name)
			}
		}
		if got := accepted(oldClient); got != s.oldOK {
			t.Fatalf("%s: old CA's client accepted=%v, want %v", s.name, got, s.oldOK)
		}
		if got := accepted(newClient); got != s.newOK {
			t.Fatalf("%s: new CA's client accepted=%v, want %v", s.name, got, s.newOK)
		}
	}
}
