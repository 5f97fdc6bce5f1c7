package edgetls

import (
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeCA is an ACME server that answers the directory, nonces and account
// creation correctly and then misbehaves on new orders as newOrder says.
type fakeCA struct {
	srv       *httptest.Server
	roots     string // PEM file trusting srv
	newOrders atomic.Int32
	nonce     atomic.Int64
	// garbageDir answers the directory with something that is not JSON.
	garbageDir bool
	// newOrder answers POST /new-order.
	newOrder func(w http.ResponseWriter, r *http.Request)
}

func startFakeCA(t *testing.T, dir string, configure func(*fakeCA)) *fakeCA {
	t.Helper()
	ca := &fakeCA{}
	configure(ca)
	ca.srv = httptest.NewUnstartedServer(http.HandlerFunc(ca.serve))
	ca.srv.Config.ErrorLog = discardLog()
	ca.srv.StartTLS()
	t.Cleanup(ca.srv.Close)
	ca.roots = filepath.Join(dir, "fake-ca.pem")
	writeFile(t, ca.roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.srv.Certificate().Raw}))
	return ca
}

func (ca *fakeCA) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Replay-Nonce", fmt.Sprintf("nonce-%d", ca.nonce.Add(1)))
	base := "https://" + r.Host
	switch r.URL.Path {
	case "/dir":
		if ca.garbageDir {
			_, _ = w.Write([]byte("<html>502 Bad Gateway</html>"))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{
			"newNonce": base + "/nonce", "newAccount": base + "/new-acct", "newOrder": base + "/new-order",
			"revokeCert": base + "/revoke", "keyChange": base + "/key-change",
		})
	case "/nonce":
		w.WriteHeader(http.StatusOK)
	case "/new-acct":
		w.Header().Set("Location", base+"/acct/1")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"status":"valid"}`))
	case "/new-order":
		ca.newOrders.Add(1)
		ca.newOrder(w, r)
	case "/finalize", "/order/1":
		// An order that stays "processing" for a day.
		w.Header().Set("Retry-After", "86400")
		_, _ = w.Write([]byte(`{"status":"processing","finalize":"` + base + `/finalize","authorizations":[]}`))
	default:
		http.NotFound(w, r)
	}
}

// hang holds the request until the client gives up or the test ends.
func hang(done <-chan struct{}) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}
}

// TestACMEFailingCA runs handshakes for a listed name against CAs that fail
// in different ways. Whatever the CA does, every handshake ends within the
// Manager's ACMEWait with the server's refusal (not the client's own
// deadline), concurrent handshakes for the name start one order, the failure
// is logged and counted, and Close stops the work in progress.
func TestACMEFailingCA(t *testing.T) {
	tests := []struct {
		name      string
		configure func(ca *fakeCA, done <-chan struct{})
		down      bool  // no CA listening at all
		wantOrder int32 // new-order requests the CA sees
		wantLog   string
		wantCount map[string]int64 // causeway_acme_orders_total after Close (error: at least)
	}{
		{"new order never answered", func(ca *fakeCA, done <-chan struct{}) { ca.newOrder = hang(done) },
			false, 1, "no certificate yet after", map[string]int64{"error": 1}},
		{"order rate limited with Retry-After of a day", func(ca *fakeCA, _ <-chan struct{}) {
			ca.newOrder = func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", "86400")
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(http.StatusTooManyRequests)
				_, _ = w.Write([]byte(`{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many"}`))
			}
		}, false, -1, "no certificate yet after", map[string]int64{"error": 1}},
		{"order processing for ever with Retry-After of a day", func(ca *fakeCA, _ <-chan struct{}) {
			ca.newOrder = func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Location", "https://"+r.Host+"/order/1")
				w.WriteHeader(http.StatusCreated)
				_, _ = w.Write([]byte(`{"status":"ready","finalize":"https://` + r.Host + `/finalize","authorizations":[]}`))
			}
		}, false, 1, "no certificate yet after", map[string]int64{"error": 1}},
		{"directory is garbage", func(ca *fakeCA, _ <-chan struct{}) { ca.garbageDir = true },
			false, 0, "ordering", map[string]int64{"error": 1}},
		{"CA down", nil, true, 0, "ordering", map[string]int64{"error": 1}},
	}
	// The cap on a processing order's Retry-After, which the flight sleeps
	// after Close, shortened so the test need not wait it out.
	defer func(d time.Duration) { maxPollWait = d }(maxPollWait)
	maxPollWait = time.Second
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			done := make(chan struct{})
			directory := "https://127.0.0.1:1/dir"
			var ca *fakeCA
			if !tt.down {
				ca = startFakeCA(t, dir, func(ca *fakeCA) { tt.configure(ca, done) })
				directory = ca.srv.URL + "/dir"
			}
			t.Cleanup(func() { close(done) })
			const host = "slow.example.com"
			acme := &routes.ACME{Hosts: []string{host}, Cache: "dir", CacheDir: filepath.Join(dir, "acme"), DirectoryURL: directory}
			if ca != nil {
				acme.CARootsFile = ca.roots
			}
			orders := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causeway_acme_orders_total", Help: "h"}, []string{"result"})
			logs := &testutil.Buffer{}
			m := newManager(t, &routes.TLS{ACME: acme}, Options{ACMEWait: time.Second, ACMEOrders: orders, Logger: textLogger(logs)})
			e := serveEdge(t, m, listen(t), listen(t))

			const clients = 5
			errs := make([]error, clients)
			var wg sync.WaitGroup
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = handshake(e.httpsAddr, &tls.Config{ServerName: host, InsecureSkipVerify: true}) //nolint:gosec // the test looks at the server's refusal, not its certificate
				}()
			}
			wg.Wait()
			for i, err := range errs {
				// The server refused: an alert, not the client's 10 s deadline.
				var ne net.Error
				if err == nil || (errors.As(err, &ne) && ne.Timeout()) || !strings.Contains(err.Error(), "remote error") {
					t.Errorf("handshake %d: error %v, want the server's alert", i, err)
				}
			}
			if !strings.Contains(logs.String(), tt.wantLog) || !strings.Contains(logs.String(), host) {
				t.Errorf("log %q, want a line naming %s with %q", logs.String(), host, tt.wantLog)
			}
			if ca != nil && tt.wantOrder >= 0 {
				if n := ca.newOrders.Load(); n != tt.wantOrder {
					t.Errorf("CA saw %d new orders for %d concurrent handshakes, want %d", n, clients, tt.wantOrder)
				}
			}
			if ca != nil && tt.wantOrder < 0 {
				// Retried, but neither once per handshake nor without pause.
				if n := ca.newOrders.Load(); n < 1 || n > 2 {
					t.Errorf("CA saw %d new orders within the handshakes' wait, want 1 or 2 (one order, retried after at most %s)", n, maxRetryWait)
				}
			}
			// Close cancels the CA requests in progress: the order ends.
			e.stop()
			m.acme.work.Wait()
			// Each handshake after a failed order may count one more error
			// (autocert keeps the failure for a minute); never an "ok".
			if got := counterValues(t, orders); got["ok"] != 0 || got["error"] < tt.wantCount["error"] {
				t.Errorf("causeway_acme_orders_total %v, want no ok and at least %v", got, tt.wantCount)
			}
		})
	}
}

func textLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestACMEConcurrentFirstHandshakes sends simultaneous first handshakes for
// a new name to a Manager whose CA (Pebble) rejects 30% of good nonces: they
// share one order, which survives the rejections, and all get its
// certificate.
func TestACMEConcurrentFirstHandshakes(t *testing.T) {
	httpLn, httpsLn := listen(t), listen(t)
	env := startACME(t, port(httpLn), port(httpsLn), "PEBBLE_WFE_NONCEREJECT=30")
	const host = "many.example.com"
	m := newManager(t, &routes.TLS{MinVersion: "1.2", ACME: env.acmeConfig(host)}, Options{})
	e := serveEdge(t, m, httpLn, httpsLn)
	const clients = 8
	serials := make([]string, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := handshake(e.httpsAddr, &tls.Config{ServerName: host, RootCAs: env.issuer})
			if errs[i] = err; err == nil {
				serials[i] = st.PeerCertificates[0].SerialNumber.String()
			}
		}()
	}
	wg.Wait()
	for i := range clients {
		if errs[i] != nil {
			t.Fatalf("handshake %d: %v\nPebble:\n%s", i, errs[i], env.pebble.output())
		}
		if serials[i] != serials[0] {
			t.Errorf("handshake %d got serial %s, handshake 0 %s: want one certificate", i, serials[i], serials[0])
		}
	}
	if n := m.acme.orders.Load(); n != 1 {
		t.Errorf("%d orders for %d concurrent handshakes, want 1", n, clients)
	}
	// Orders Pebble created, not new-order requests: a rejected nonce makes
	// the client send the same request again.
	if n := strings.Count(env.pebble.output(), "Added order"); n != 1 {
		t.Errorf("Pebble created %d orders, want 1", n)
	}
	if !strings.Contains(env.pebble.output(), "Configured to reject 30% of good nonces") {
		t.Errorf("Pebble was not rejecting nonces:\n%s", env.pebble.output())
	}
}

func TestACMETransportCapsPollWait(t *testing.T) {
	far := time.Now().Add(48 * time.Hour).UTC().Format(http.TimeFormat)
	tests := []struct {
		name   string
		status int
		after  string
		want   string
	}{
		{"short wait kept", http.StatusOK, "3", "3"},
		{"a day capped", http.StatusOK, "86400", "10"},
		{"far date capped", http.StatusOK, far, "10"},
		{"none added", http.StatusOK, "", ""},
		{"error answers left to the retry backoff", http.StatusServiceUnavailable, "86400", "86400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tt.after != "" {
					w.Header().Set("Retry-After", tt.after)
				}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			tr := newClosableTransport(&http.Transport{}, time.Now)
			defer tr.close()
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			res, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if got := res.Header.Get("Retry-After"); got != tt.want {
				t.Errorf("Retry-After %q, want %q", got, tt.want)
			}
		})
	}
}

func TestACMEBackoff(t *testing.T) {
	resp := func(after string) *http.Response {
		r := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{}}
		if after != "" {
			r.Header.Set("Retry-After", after)
		}
		return r
	}
	tests := []struct {
		name     string
		n        int
		res      *http.Response
		min, max time.Duration // jitter adds up to a second
	}{
		{"first retry", 1, resp(""), time.Second, 2 * time.Second},
		{"third retry doubles twice", 3, resp(""), 4 * time.Second, 5 * time.Second},
		{"growth capped", 9, resp(""), maxRetryWait, maxRetryWait + time.Second},
		{"Retry-After honoured", 1, resp("3"), 3 * time.Second, 4 * time.Second},
		{"Retry-After of a day capped", 1, resp("86400"), maxRetryWait, maxRetryWait + time.Second},
		{"no retry after maxRetries", maxRetries + 1, resp(""), 0, 0},
		{"rejected nonce retried at once", 3, &http.Response{StatusCode: http.StatusBadRequest}, time.Millisecond, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := backoff(tt.n, tt.res, time.Now()); d < tt.min || d > tt.max {
				t.Errorf("backoff(%d) = %s, want in [%s, %s]", tt.n, d, tt.min, tt.max)
			}
		})
	}
}

// TestACMERefusedReloadKeepsOrder builds and closes a second Manager for the
// same tls section while the first has an order waiting at the CA, as a
// refused routes reload does: the first Manager's order must go on.
func TestACMERefusedReloadKeepsOrder(t *testing.T) {
	dir := t.TempDir()
	release := make(chan struct{})
	var inFlight, cancelled, answered atomic.Int32
	ca := startFakeCA(t, dir, func(ca *fakeCA) {
		ca.newOrder = func(w http.ResponseWriter, r *http.Request) {
			inFlight.Add(1)
			select {
			case <-r.Context().Done():
				cancelled.Add(1)
			case <-release:
				w.WriteHeader(http.StatusServiceUnavailable)
				answered.Add(1)
			}
		}
	})
	const host = "reload.example.com"
	cfg := &routes.TLS{ACME: &routes.ACME{Hosts: []string{host}, Cache: "dir", CacheDir: filepath.Join(dir, "acme"),
		DirectoryURL: ca.srv.URL + "/dir", CARootsFile: ca.roots}}
	m := newManager(t, cfg, Options{ACMEWait: 100 * time.Millisecond})
	e := serveEdge(t, m, listen(t), listen(t))
	if _, err := handshake(e.httpsAddr, &tls.Config{ServerName: host, InsecureSkipVerify: true}); err == nil { //nolint:gosec // only the refusal matters
		t.Fatal("handshake succeeded with no certificate issued")
	}
	for inFlight.Load() == 0 {
		time.Sleep(10 * time.Millisecond) // the order reaches the CA
	}
	refused, err := New(t.Context(), cfg, Options{HoldExpiry: true})
	if err != nil {
		t.Fatal(err)
	}
	refused.Close()
	close(release) // the CA answers the order now, with a 503
	for answered.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	e.stop() // Close cancels the wait before the retry
	m.acme.work.Wait()
	if n := cancelled.Load(); n != 0 {
		t.Errorf("%d CA requests of the serving Manager were cancelled by closing the refused one", n)
	}
}
