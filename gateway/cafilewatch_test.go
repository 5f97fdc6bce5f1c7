package gateway

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
)

// TestUpstreamCAFileWatched: an upstream's tls.ca_file is watched as the
// API-key files are. A bundle rotated to a new CA (the backend's
// certificate having moved to it) is used without a SIGHUP or a change to
// the routes file; a bundle that does not parse is refused, logged and
// counted, and the roots in use keep serving.
func TestUpstreamCAFileWatched(t *testing.T) {
	ca1, ca2 := testutil.NewCA(t), testutil.NewCA(t)
	var hits atomic.Int64
	backend := newRotatingTLS(t, "backend.test", ca1, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("ok"))
	}))

	caPath := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, caPath, string(ca1.PEM()))
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  up:
    endpoints: [%q]
    scheme: https
    tls: {server_name: backend.test, ca_file: %q}
routes:
  - {name: r, match: {path_prefix: /}, upstream: up}
`, strings.TrimPrefix(backend.URL, "https://"), caPath))
	status := func() int { resp, _ := get(t, te.url+"/x"); return resp.StatusCode }
	if s := status(); s != http.StatusOK {
		t.Fatalf("with the backend's CA: %d", s)
	}
	backend.moveTo(t, ca2)
	if s := status(); s != http.StatusBadGateway {
		t.Fatalf("a certificate of a CA the bundle lacks: %d, want 502", s)
	}

	t.Run("a rotated bundle is used without a reload", func(t *testing.T) {
		writeFile(t, caPath, string(ca2.PEM()))
		waitFor(t, func() bool { return status() == http.StatusOK })
	})
	t.Run("a bundle that does not parse is refused; the roots in use stay", func(t *testing.T) {
		writeFile(t, caPath, brokenPEM)
		waitFor(t, func() bool { return !te.LastReload().OK })
		before := hits.Load()
		for range 20 {
			if s := status(); s != http.StatusOK {
				t.Fatalf("after a broken bundle: %d", s)
			}
		}
		if got := hits.Load() - before; got != 20 {
			t.Fatalf("the backend received %d of 20 requests", got)
		}
		if e := te.LastReload().Error; !strings.Contains(e, "CA bundle") {
			t.Fatalf("the reload error does not say the bundle is bad: %q", e)
		}
		_, body := get(t, te.admin+"/metrics")
		if !strings.Contains(string(body), `causeway_config_reloads_total{result="failure"} 1`) {
			t.Fatal("the refused bundle is not counted")
		}
	})
	t.Run("a fixed bundle is used", func(t *testing.T) {
		writeFile(t, caPath, string(ca1.PEM())) // back to a bundle without ca2
		waitFor(t, func() bool { return te.LastReload().OK })
		waitFor(t, func() bool { return status() == http.StatusBadGateway })
	})
}

// TestExtAuthzCAFileWatched: an ext_authz server's ca_file is watched as
// an upstream's is. The authorization server moving to a certificate of a
// new private CA fails closed (status_on_error, nothing reaches the upstream) until the
// bundle is rotated, which is taken up without a SIGHUP; a bundle that does
// not parse is refused and the roots in use keep verifying the server.
func TestExtAuthzCAFileWatched(t *testing.T) {
	ca1, ca2 := testutil.NewCA(t), testutil.NewCA(t)
	authz := newRotatingTLS(t, "localhost", ca1, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			http.Error(w, "no", http.StatusForbidden)
		}
	}))
	var hits atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(backend.Close)

	caPath := filepath.Join(t.TempDir(), "authz-ca.pem")
	writeFile(t, caPath, string(ca1.PEM()))
	authzURL := "https://localhost:" + strconv.Itoa(authz.Listener.Addr().(*net.TCPAddr).Port)
	te := startEdge(t, listenHeader+fmt.Sprintf(`authenticators:
  authz:
    ext_authz: {http_url: %q, ca_file: %q, timeout: 5s, status_on_error: 503}
upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: up, auth: authz}
`, authzURL, caPath, strings.TrimPrefix(backend.URL, "http://")))
	status := func() int {
		resp, _ := get(t, te.url+"/x", "Authorization", "Bearer good")
		return resp.StatusCode
	}
	if s := status(); s != http.StatusOK {
		t.Fatalf("with the authorization server's CA: %d", s)
	}
	authz.moveTo(t, ca2) // the authorization server moves to another CA
	before := hits.Load()
	if s := status(); s != http.StatusServiceUnavailable {
		t.Fatalf("an authorization server of a CA the bundle lacks: %d, want 503", s)
	}
	if hits.Load() != before {
		t.Fatal("a request the authorization server could not be asked about reached the upstream")
	}

	t.Run("a rotated bundle is used without a reload", func(t *testing.T) {
		writeFile(t, caPath, string(ca2.PEM()))
		waitFor(t, func() bool { return status() == http.StatusOK })
	})
	t.Run("a bundle that does not parse is refused; the roots in use stay", func(t *testing.T) {
		writeFile(t, caPath, brokenPEM)
		waitFor(t, func() bool { return !te.LastReload().OK })
		if e := te.LastReload().Error; !strings.Contains(e, "ext_authz.ca_file") {
			t.Fatalf("the reload error does not name ext_authz.ca_file: %q", e)
		}
		for range 20 {
			if s := status(); s != http.StatusOK {
				t.Fatalf("after a broken bundle: %d", s)
			}
		}
	})
}

// rotatingTLS is a TLS server whose certificate (for one host name) can move
// to another CA while it runs. Every request is a handshake of its own, so
// the roots a client holds at that moment decide each.
type rotatingTLS struct {
	*httptest.Server
	host   string
	serial int64
	served atomic.Pointer[tls.Certificate]
}

func newRotatingTLS(t *testing.T, host string, ca *testutil.CA, h http.Handler) *rotatingTLS {
	t.Helper()
	s := &rotatingTLS{Server: httptest.NewUnstartedServer(h), host: host}
	s.moveTo(t, ca)
	s.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.served.Load(), nil }}
	s.Config.SetKeepAlivesEnabled(false)
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// moveTo serves a new certificate of ca from the next handshake on.
func (s *rotatingTLS) moveTo(t *testing.T, ca *testutil.CA) {
	t.Helper()
	s.serial++
	c, k := ca.Leaf(t, s.host, s.serial)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	s.served.Store(&cert)
}

// brokenPEM is a PEM block that holds no certificate ("not a certificate").
const brokenPEM = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
