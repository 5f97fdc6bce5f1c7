package edgetls

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// The ACME tests run against Pebble, Let's Encrypt's test CA, doing real
// challenge validation: pebble-challtestsrv answers Pebble's DNS queries with
// 127.0.0.1, so Pebble connects to our own listeners for TLS-ALPN-01 and
// HTTP-01. Both binaries come from scripts/go-tools.txt (`make deps`).

// findTool returns the path of a test peer on PATH or in the repository's
// .tools/bin, and fails the test (never skips) when it is missing.
func findTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, ".tools", "bin", name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	t.Fatalf("%s not found on PATH or in .tools/bin: run `make deps` (it installs the peers listed in scripts/go-tools.txt)", name)
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is a peer started for one test, its output kept for failure reports.
type process struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startProcess runs bin and waits until it prints ready.
func startProcess(t testing.TB, env []string, ready string, bin string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	p := &process{}
	readyCh := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sc := bufio.NewScanner(pr)
		seen := false
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if !seen && strings.Contains(sc.Text(), ready) {
				seen = true
				close(readyCh)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		<-readerDone
	})
	select {
	case <-readyCh:
	case err := <-exited:
		t.Fatalf("%s exited before it was ready (%v):\n%s", filepath.Base(bin), err, p.output())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not ready within 30s:\n%s", filepath.Base(bin), p.output())
	}
	return p
}

// acmeEnv is one challenge DNS server and one Pebble, plus the files a
// Manager needs to trust Pebble's API.
type acmeEnv struct {
	dir       string
	directory string // Pebble's ACME directory URL
	apiRoots  string // file trusted for Pebble's API (ca_roots_file)
	issuer    *x509.CertPool
	pebble    *process
}

// startACME starts challtestsrv and Pebble validating HTTP-01 on httpPort and
// TLS-ALPN-01 on tlsPort.
func startACME(t testing.TB, httpPort, tlsPort int, pebbleEnv ...string) *acmeEnv {
	t.Helper()
	return startACMEValidity(t, httpPort, tlsPort, 7776000, pebbleEnv...)
}

// startACMEValidity is startACME with Pebble issuing certificates valid for
// validity seconds (its profile's validityPeriod).
func startACMEValidity(t testing.TB, httpPort, tlsPort int, validity int, pebbleEnv ...string) *acmeEnv {
	t.Helper()
	pebbleBin := findTool(t, "pebble")
	challBin := findTool(t, "pebble-challtestsrv")
	requirePebble(t, pebbleBin)
	dir := t.TempDir()
	dnsPort := freePort(t)
	startProcess(t, nil, "Starting management server", challBin,
		"-dnsserver", "127.0.0.1:"+strconv.Itoa(dnsPort), "-management", "127.0.0.1:"+strconv.Itoa(freePort(t)),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-defaultIPv6", "")

	// Pebble's API certificate, from a CA of our own that the Manager trusts
	// through ca_roots_file.
	apiCA := newCA(t, "pebble API CA")
	cert, key := apiCA.leaf(t, "127.0.0.1", false, "127.0.0.1", "localhost")
	env := &acmeEnv{dir: dir, apiRoots: filepath.Join(dir, "api-ca.pem")}
	writeFile(t, env.apiRoots, apiCA.pem)
	writeFile(t, filepath.Join(dir, "api.pem"), cert)
	writeFile(t, filepath.Join(dir, "api-key.pem"), key)
	apiPort, mgmtPort := freePort(t), freePort(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  "127.0.0.1:" + strconv.Itoa(apiPort),
		"managementListenAddress":        "127.0.0.1:" + strconv.Itoa(mgmtPort),
		"certificate":                    filepath.Join(dir, "api.pem"),
		"privateKey":                     filepath.Join(dir, "api-key.pem"),
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"domainBlocklist":                []string{"blocked-domain.example"},
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles":                       map[string]any{"default": map[string]any{"description": "tests", "validityPeriod": validity}},
	}}
	data, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	writeFile(t, cfgFile, data)
	env.pebble = startProcess(t, append([]string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}, pebbleEnv...), "ACME directory available at",
		pebbleBin, "-config", cfgFile, "-dnsserver", "127.0.0.1:"+strconv.Itoa(dnsPort))
	env.directory = fmt.Sprintf("https://127.0.0.1:%d/dir", apiPort)

	// The root Pebble generated at start, which clients must trust. The
	// management listener starts beside the API one and may trail its log
	// line by a moment: retry refused connections for a bounded time.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: apiCA.pool()}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var root []byte
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
		if err == nil {
			root, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("Pebble's root: status %d, body %q", resp.StatusCode, root)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetching Pebble's root: %v\n%s", err, env.pebble.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	env.issuer = x509.NewCertPool()
	if !env.issuer.AppendCertsFromPEM(root) {
		t.Fatalf("Pebble's root is not PEM: %q", root)
	}
	return env
}

// minPebble is the oldest Pebble the tests accept. v2.10.1 can deadlock an
// order polled while its certificate is issued (see
// TestPebbleOrderPollDuringIssuance): an edge caught there never gets its
// certificate and the test fails for reasons of the CA, not of the edge.
const minPebble = "v2.10.3"

// requirePebble fails the test when bin was built from a Pebble older than
// minPebble (a .tools/bin from before the bump in scripts/go-tools.txt). The
// version comes from the binary's own build information.
func requirePebble(t testing.TB, bin string) {
	t.Helper()
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("reading the build information of %s: %v", bin, err)
	}
	got := bi.Main.Version
	if !versionAtLeast(got, minPebble) {
		t.Fatalf("%s is Pebble %s; the tests need %s or later (older ones can deadlock an order polled during issuance): run `make deps`", bin, got, minPebble)
	}
}

// versionAtLeast compares two vMAJOR.MINOR.PATCH versions; anything else
// (such as "(devel)") is not at least anything.
func versionAtLeast(v, least string) bool {
	parse := func(s string) ([3]int, bool) {
		var n [3]int
		s, ok := strings.CutPrefix(s, "v")
		parts := strings.SplitN(s, ".", 3)
		if !ok || len(parts) != 3 {
			return n, false
		}
		parts[2], _, _ = strings.Cut(parts[2], "-")
		for i, p := range parts {
			x, err := strconv.Atoi(p)
			if err != nil {
				return n, false
			}
			n[i] = x
		}
		return n, true
	}
	a, okA := parse(v)
	b, okB := parse(least)
	if !okA || !okB {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return true
}

func (e *acmeEnv) acmeConfig(hosts ...string) *routes.ACME {
	return &routes.ACME{Email: "ops@example.com", Hosts: hosts, Cache: "dir", CacheDir: filepath.Join(e.dir, "acme-cache"),
		DirectoryURL: e.directory, CARootsFile: e.apiRoots}
}

// edge is a Manager served on real http and https listeners.
type edge struct {
	m         *Manager
	httpsAddr string
	stop      func()
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// serveEdge serves m on the given listeners; stop shuts both down and
// closes the Manager.
func serveEdge(t testing.TB, m *Manager, httpLn, httpsLn net.Listener) *edge {
	t.Helper()
	https := &http.Server{Handler: m.WrapHSTS(okHandler()), TLSConfig: m.TLSConfig(), ErrorLog: discardLog(), ReadHeaderTimeout: 10 * time.Second}
	plain := &http.Server{Handler: m.HTTPHandler(strconv.Itoa(port(httpsLn))), ErrorLog: discardLog(), ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := https.ServeTLS(httpsLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("https: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := plain.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("http: %v", err)
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			https.Close()
			plain.Close()
			wg.Wait()
			m.Close()
		})
	}
	t.Cleanup(stop)
	return &edge{m: m, httpsAddr: httpsLn.Addr().String(), stop: stop}
}

// TestACMEPebbleAndRestartFromCache obtains a certificate from Pebble through
// the Manager's ACME configuration (TLS-ALPN-01 validated on our https
// listener), verifies it with a client trusting only Pebble's root, then
// starts a new Manager over the same cache_dir and shows the same certificate
// is served with no new order.
func TestACMEPebbleAndRestartFromCache(t *testing.T) {
	httpLn, httpsLn := listen(t), listen(t)
	env := startACME(t, port(httpLn), port(httpsLn))
	const host = "edge.example.com"
	cfg := &routes.TLS{MinVersion: "1.2", ACME: env.acmeConfig(host)}

	m := newManager(t, cfg, Options{})
	e := serveEdge(t, m, httpLn, httpsLn)
	client := &tls.Config{ServerName: host, RootCAs: env.issuer}
	st, err := handshake(e.httpsAddr, client)
	if err != nil {
		t.Fatalf("handshake for %s (first, orders): %v\nPebble:\n%s", host, err, env.pebble.output())
	}
	first := st.PeerCertificates[0]
	if first.DNSNames[0] != host {
		t.Fatalf("certificate for %v, want %s", first.DNSNames, host)
	}
	if n := m.acme.orders.Load(); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}
	if _, err := handshake(e.httpsAddr, client); err != nil {
		t.Fatalf("second handshake: %v", err)
	}
	if n := m.acme.orders.Load(); n != 1 {
		t.Fatalf("%d orders after a second handshake, want still 1", n)
	}
	t.Run("host not listed never orders", func(t *testing.T) {
		if _, err := handshake(e.httpsAddr, &tls.Config{ServerName: "other.example.com", RootCAs: env.issuer}); err == nil {
			t.Fatal("handshake for an unlisted host succeeded")
		}
		if n := m.acme.orders.Load(); n != 1 {
			t.Fatalf("%d orders, want still 1", n)
		}
	})
	pebbleOrders := strings.Count(env.pebble.output(), "POST /order-plz")
	e.stop()

	// Restart: a new Manager, new listeners on the same ports (Pebble's
	// config names them), the same cache_dir.
	httpLn2, err := net.Listen("tcp", httpLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	httpsLn2, err := net.Listen("tcp", httpsLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	expiry := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "causeway_certificate_expiry_timestamp_seconds", Help: "h"}, []string{"name"})
	m2 := newManager(t, cfg, Options{Expiry: expiry})
	// The cached certificate's expiry is known before any handshake.
	if got, want := gaugeValues(t, expiry), map[string]int64{host: first.NotAfter.Unix()}; !maps.Equal(got, want) {
		t.Fatalf("expiry metric after restart %v, want %v", got, want)
	}
	e2 := serveEdge(t, m2, httpLn2, httpsLn2)
	st, err = handshake(e2.httpsAddr, client)
	if err != nil {
		t.Fatalf("handshake after restart: %v", err)
	}
	if got := st.PeerCertificates[0].SerialNumber; got.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("after restart served serial %v, want the cached %v", got, first.SerialNumber)
	}
	if n := m2.acme.orders.Load(); n != 0 {
		t.Fatalf("restarted Manager placed %d orders, want 0 (cache hit)", n)
	}
	// And on the CA's side: no new-order request reached Pebble.
	if n := strings.Count(env.pebble.output(), "POST /order-plz"); n != pebbleOrders || n == 0 {
		t.Fatalf("Pebble saw %d new-order requests after the restart, %d before; want equal and non-zero", n, pebbleOrders)
	}
}

// TestACMEHTTP01 makes TLS-ALPN-01 impossible (Pebble validates it on a port
// nobody listens on), so autocert falls back to HTTP-01, which Pebble checks
// on the Manager's HTTPHandler.
func TestACMEHTTP01(t *testing.T) {
	httpLn, httpsLn := listen(t), listen(t)
	env := startACME(t, port(httpLn), freePort(t))
	const host = "http01.example.com"
	m := newManager(t, &routes.TLS{MinVersion: "1.2", ACME: env.acmeConfig(host)}, Options{})
	e := serveEdge(t, m, httpLn, httpsLn)
	st, err := handshake(e.httpsAddr, &tls.Config{ServerName: host, RootCAs: env.issuer})
	if err != nil {
		t.Fatalf("handshake: %v\nPebble:\n%s", err, env.pebble.output())
	}
	if st.PeerCertificates[0].DNSNames[0] != host {
		t.Fatalf("certificate for %v", st.PeerCertificates[0].DNSNames)
	}
	if !strings.Contains(env.pebble.output(), "Attempting to validate w/ HTTP:") {
		t.Fatalf("Pebble's log shows no http-01 validation:\n%s", env.pebble.output())
	}
}

// TestACMEStaticAndOnDemand combines a static certificate (served first for
// its names, and as the default) with on-demand issuance gated by the ask
// endpoint and rate limited to one order per hour of the injected clock.
func TestACMEStaticAndOnDemand(t *testing.T) {
	httpLn, httpsLn := listen(t), listen(t)
	env := startACME(t, port(httpLn), port(httpsLn))
	staticCA := newCA(t, "static CA")
	sc, sk := staticCA.writePair(t, t.TempDir(), "static", "static.example.com")

	var (
		askMu sync.Mutex
		asks  = map[string]int{}
	)
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := r.URL.Query().Get("domain")
		askMu.Lock()
		asks[d]++
		askMu.Unlock()
		if strings.HasPrefix(d, "ok") {
			return // 200
		}
		w.WriteHeader(http.StatusForbidden)
	}))
	defer ask.Close()
	asked := func(d string) int { askMu.Lock(); defer askMu.Unlock(); return asks[d] }

	var (
		clockMu sync.Mutex
		now     = time.Now()
	)
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	orders := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causeway_acme_orders_total", Help: "h"}, []string{"result"})
	acme := env.acmeConfig()
	acme.OnDemand = &routes.OnDemand{Ask: ask.URL + "/ask", Interval: routes.Duration(time.Hour), Burst: 1}
	m := newManager(t, &routes.TLS{MinVersion: "1.2", ACME: acme, Certificates: []routes.Certificate{{CertFile: sc, KeyFile: sk}}},
		Options{Now: clock, ACMEOrders: orders, HTTPClient: ask.Client()})
	e := serveEdge(t, m, httpLn, httpsLn)
	viaPebble := func(name string) error {
		_, err := handshake(e.httpsAddr, &tls.Config{ServerName: name, RootCAs: env.issuer})
		return err
	}

	steps := []struct {
		name       string
		run        func() error
		wantOK     bool
		wantOrders int64
	}{
		{"static name is served the static certificate", func() error {
			_, err := handshake(e.httpsAddr, &tls.Config{ServerName: "static.example.com", RootCAs: staticCA.pool()})
			return err
		}, true, 0},
		{"ask refuses: no order, the default certificate does not verify", func() error { return viaPebble("denied.example.com") }, false, 0},
		{"ask allows: ordered at the first handshake", func() error { return viaPebble("ok1.example.com") }, true, 1},
		{"same name again: no second ask, no order", func() error { return viaPebble("ok1.example.com") }, true, 1},
		{"second new name within the rate limit window: refused", func() error { return viaPebble("ok2.example.com") }, false, 1},
		{"an hour later the limit allows it", func() error {
			clockMu.Lock()
			now = now.Add(time.Hour)
			clockMu.Unlock()
			return viaPebble("ok2.example.com")
		}, true, 2},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			err := s.run()
			if s.wantOK != (err == nil) {
				t.Fatalf("handshake error %v, want success %v\nPebble:\n%s", err, s.wantOK, env.pebble.output())
			}
			if n := m.acme.orders.Load(); n != s.wantOrders {
				t.Fatalf("%d orders, want %d", n, s.wantOrders)
			}
		})
	}
	if n := asked("ok1.example.com"); n != 1 {
		t.Errorf("ask endpoint asked %d times for ok1.example.com, want 1", n)
	}
	if n := asked("static.example.com"); n != 0 {
		t.Errorf("ask endpoint asked %d times for a static name, want 0", n)
	}
	want := map[string]int64{"ok": 2, "rate_limited": 1}
	if got := counterValues(t, orders); !maps.Equal(got, want) {
		t.Errorf("causeway_acme_orders_total %v, want %v", got, want)
	}
}

func counterValues(t testing.TB, c *prometheus.CounterVec) map[string]int64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = int64(m.GetCounter().GetValue())
		}
	}
	return out
}

// TestACMEWithClientAuth requires client certificates on the https listener;
// the CA's TLS-ALPN-01 validation, which has none, must still pass.
func TestACMEWithClientAuth(t *testing.T) {
	httpLn, httpsLn := listen(t), listen(t)
	env := startACME(t, port(httpLn), port(httpsLn))
	clientCA := newCA(t, "client CA")
	caFile := filepath.Join(t.TempDir(), "clients.pem")
	writeFile(t, caFile, clientCA.pem)
	const host = "mtls.example.com"
	expiry := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "causeway_certificate_expiry_timestamp_seconds", Help: "h"}, []string{"name"})
	m := newManager(t, &routes.TLS{MinVersion: "1.2", ClientAuth: "require", ClientCAFile: caFile, ACME: env.acmeConfig(host)}, Options{Expiry: expiry})
	e := serveEdge(t, m, httpLn, httpsLn)
	st, err := handshake(e.httpsAddr, &tls.Config{ServerName: host, RootCAs: env.issuer, Certificates: []tls.Certificate{clientCA.clientCert(t, "partner")}})
	if err != nil {
		t.Fatalf("handshake: %v\nPebble:\n%s", err, env.pebble.output())
	}
	// A request, not just a handshake: in TLS 1.3 the server refuses the
	// missing client certificate after the client's side of the handshake.
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: host, RootCAs: env.issuer}}
	defer tr.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + e.httpsAddr + "/"); err == nil {
		resp.Body.Close()
		t.Fatal("request without a client certificate succeeded")
	}
	want := map[string]int64{host: st.PeerCertificates[0].NotAfter.Unix()}
	if got := gaugeValues(t, expiry); !maps.Equal(got, want) {
		t.Fatalf("expiry metric %v, want %v", got, want)
	}
}
