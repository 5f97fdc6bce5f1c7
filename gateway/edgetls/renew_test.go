package edgetls

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
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

// switchProxy forwards TCP connections to target until it is switched off:
// then it drops every connection, open or new, as a CA that is down would.
type switchProxy struct {
	ln     net.Listener
	target string
	off    atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	sent   []time.Time // when bytes went from a client to target
	wg     sync.WaitGroup
}

// firstSentAfter is when a client first sent bytes to target after t.
func (p *switchProxy) firstSentAfter(t time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.sent {
		if s.After(t) {
			return s, true
		}
	}
	return time.Time{}, false
}

// noteWriter records when the client side wrote to target.
type noteWriter struct {
	p *switchProxy
	w io.Writer
}

func (n noteWriter) Write(b []byte) (int, error) {
	n.p.mu.Lock()
	n.p.sent = append(n.p.sent, time.Now())
	n.p.mu.Unlock()
	return n.w.Write(b)
}

func startSwitchProxy(t testing.TB, target string) *switchProxy {
	t.Helper()
	p := &switchProxy{ln: listen(t), target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		p.ln.Close()
		p.dropAll()
		p.wg.Wait()
	})
	return p
}

func (p *switchProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.off.Load() {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		for i, pair := range [][2]net.Conn{{up, c}, {c, up}} {
			var dst io.Writer = pair[0]
			if i == 0 {
				dst = noteWriter{p: p, w: up}
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				_, _ = io.Copy(dst, pair[1])
				pair[0].Close()
				pair[1].Close()
				p.mu.Lock()
				delete(p.conns, pair[0])
				delete(p.conns, pair[1])
				p.mu.Unlock()
			}()
		}
	}
}

func (p *switchProxy) set(on bool) {
	p.off.Store(!on)
	if !on {
		p.dropAll()
	}
}

func (p *switchProxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// seen is one handshake of the renewal test: when it ended, and what it got.
type seen struct {
	at   time.Time
	leaf *x509.Certificate
	err  error
}

// TestACMERenewal runs renewal end to end against Pebble issuing
// certificates valid for 10 s, with the renewal window set to 6 s and 8
// clients handshaking all the while:
//
//   - the edge renews when 6 s are left, not earlier, and before expiry;
//   - while the order runs, handshakes get the old certificate; after it,
//     the new one; no handshake fails and none gets an expired certificate
//     (the clients verify the chain and validity against Pebble's root);
//   - with the CA down when the next renewal falls due, the edge keeps
//     serving the current certificate, retries, logs the failure and counts
//     it in causeway_acme_orders_total{result="error"}; once the CA is back,
//     the next retry renews before the certificate expires.
func TestACMERenewal(t *testing.T) {
	const (
		validity = 10 // seconds; Pebble's NotAfter is NotBefore + validity - 1 s
		window   = 6 * time.Second
		retry    = 300 * time.Millisecond
		clients  = 8
		host     = "renew.example.com"
	)
	httpLn, httpsLn := listen(t), listen(t)
	env := startACMEValidity(t, port(httpLn), port(httpsLn), validity)
	// The edge reaches Pebble's API through a proxy the test can switch
	// off; Pebble writes its URLs with the host the request named.
	apiAddr := strings.TrimSuffix(strings.TrimPrefix(env.directory, "https://"), "/dir")
	ca := startSwitchProxy(t, apiAddr)
	cfg := env.acmeConfig(host)
	cfg.DirectoryURL = "https://" + ca.ln.Addr().String() + "/dir"

	orders := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causeway_acme_orders_total", Help: "h"}, []string{"result"})
	logs := &testutil.Buffer{}
	m := newManager(t, &routes.TLS{MinVersion: "1.2", ACME: cfg},
		Options{ACMERenewBefore: window, ACMERenewRetry: retry, ACMEOrders: orders, Logger: textLogger(logs), Now: time.Now})
	e := serveEdge(t, m, httpLn, httpsLn)
	client := &tls.Config{ServerName: host, RootCAs: env.issuer}

	st, err := handshake(e.httpsAddr, client)
	if err != nil {
		t.Fatalf("first handshake: %v\nPebble:\n%s", err, env.pebble.output())
	}
	first := st.PeerCertificates[0]
	if got := first.NotAfter.Sub(first.NotBefore); got > validity*time.Second {
		t.Fatalf("Pebble issued a certificate valid for %s, want at most %ds", got, validity)
	}

	// The clients handshake until stop, recording what each got.
	var (
		mu     sync.Mutex
		seenBy = make([][]seen, clients)
		wg     sync.WaitGroup
		stop   = make(chan struct{})
	)
	for i := range clients {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				st, err := handshake(e.httpsAddr, client)
				s := seen{at: time.Now(), err: err}
				if err == nil {
					s.leaf = st.PeerCertificates[0]
				}
				mu.Lock()
				seenBy[i] = append(seenBy[i], s)
				mu.Unlock()
			}
		})
	}
	stopClients := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopClients)
	// served waits until a handshake gets a certificate other than cur and
	// returns it with the time it was first seen.
	served := func(cur *x509.Certificate, by time.Time) (*x509.Certificate, time.Time) {
		t.Helper()
		for time.Now().Before(by) {
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			var got *x509.Certificate
			var at time.Time
			for _, l := range seenBy {
				for _, s := range l {
					if s.leaf != nil && s.leaf.NotAfter.After(cur.NotAfter) && (got == nil || s.at.Before(at)) {
						got, at = s.leaf, s.at
					}
				}
			}
			mu.Unlock()
			if got != nil {
				return got, at
			}
		}
		t.Fatalf("no new certificate served by %s (the current one expires at %s)\nlog:\n%s", by, cur.NotAfter, logs.String())
		return nil, time.Time{}
	}
	oldDuring := func(cur *x509.Certificate, from, to time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, l := range seenBy {
			for _, s := range l {
				if s.leaf != nil && s.leaf.SerialNumber.Cmp(cur.SerialNumber) == 0 && !s.at.Before(from) && s.at.Before(to) {
					n++
				}
			}
		}
		return n
	}

	// Renewal at the window. The server schedules it from the same
	// (second-truncated) NotAfter the client reads, plus at most a tenth of
	// the window of jitter. The renewal starts with its first request to
	// the CA after the first certificate was served.
	firstServed := time.Now()
	second, at := served(first, first.NotAfter)
	start, ok := ca.firstSentAfter(firstServed)
	if !ok || start.After(at) {
		t.Fatalf("no request to the CA before the renewed certificate was served at %s", at)
	}
	dueFrom := first.NotAfter.Add(-window)
	if dueBy := dueFrom.Add(window / 10); start.Before(dueFrom) || start.After(dueBy.Add(time.Second)) {
		t.Errorf("renewal started at %s, want within the window opening at %s (by %s with jitter)", start, dueFrom, dueBy)
	}
	if n := oldDuring(first, start, at); n == 0 {
		t.Errorf("no handshake while the renewal ran (%s to %s) got the old certificate", start, at)
	}

	// The CA goes down before the next renewal falls due.
	ca.set(false)
	deadline := second.NotAfter.Add(-2 * time.Second)
	for counterValues(t, orders)["error"] < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("renewal with the CA down: orders %v, want at least 2 errors (a retry)\nlog:\n%s", counterValues(t, orders), logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "acme renewal failed") || !strings.Contains(logs.String(), host) {
		t.Errorf("log does not report the failed renewal for %s:\n%s", host, logs.String())
	}
	if st, err := handshake(e.httpsAddr, client); err != nil || st.PeerCertificates[0].SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Errorf("with the CA down: handshake %v, want the current certificate", err)
	}
	ca.set(true)
	third, at3 := served(second, second.NotAfter)
	if !at3.Before(second.NotAfter) {
		t.Errorf("renewed after the CA came back at %s, after the certificate expired at %s", at3, second.NotAfter)
	}
	stopClients()

	// Across all handshakes: none failed, none got an expired certificate,
	// and no client went back to an older certificate.
	total := 0
	for i, l := range seenBy {
		var last *x509.Certificate
		for _, s := range l {
			total++
			if s.err != nil {
				t.Fatalf("client %d: handshake at %s failed: %v", i, s.at, s.err)
			}
			if !s.at.Before(s.leaf.NotAfter) {
				t.Fatalf("client %d: at %s got a certificate that expired at %s", i, s.at, s.leaf.NotAfter)
			}
			if last != nil && s.leaf.NotAfter.Before(last.NotAfter) {
				t.Fatalf("client %d: got certificate %s after the newer %s", i, s.leaf.SerialNumber, last.SerialNumber)
			}
			last = s.leaf
		}
	}
	got := counterValues(t, orders)
	if got["ok"] < 3 || got["error"] < 2 {
		t.Errorf("causeway_acme_orders_total %v, want at least 3 ok (first order and two renewals) and 2 errors", got)
	}
	t.Logf("%d handshakes; certificates %s, %s, %s; orders %v", total, first.SerialNumber, second.SerialNumber, third.SerialNumber, got)
}

// TestACMERenewAt checks the renewal time: a third of the lifetime before
// expiry (at most 30 days), or the configured window, plus at most a tenth
// of it (at most an hour) of jitter.
func TestACMERenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		before   time.Duration
		lifetime time.Duration
		window   time.Duration
	}{
		{"90 days: 30 days before", 0, 90 * 24 * time.Hour, 30 * 24 * time.Hour},
		{"6 days: 2 days before", 0, 6 * 24 * time.Hour, 2 * 24 * time.Hour},
		{"a year: at most 30 days before", 0, 365 * 24 * time.Hour, 30 * 24 * time.Hour},
		{"configured window", 6 * time.Second, 10 * time.Second, 6 * time.Second},
		{"configured window longer than a third", 20 * 24 * time.Hour, 6 * 24 * time.Hour, 20 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss := &acmeIssuer{renewal: renewal{before: tt.before}}
			na := nb.Add(tt.lifetime)
			for range 100 {
				at := iss.renewAt(nb, na)
				if from, to := na.Add(-tt.window), na.Add(-tt.window).Add(min(tt.window/10, time.Hour)); at.Before(from) || !at.Before(to) {
					t.Fatalf("renewal at %s, want in [%s, %s)", at, from, to)
				}
			}
		})
	}
}

// TestACMENeverServesExpired puts a certificate in service and moves the
// clock past its NotAfter: handshakes then never get it. With the CA down
// they fail; they do not fall back to the expired certificate.
func TestACMENeverServesExpired(t *testing.T) {
	ca := newCA(t, "expiring CA")
	dir := t.TempDir()
	certFile, keyFile := ca.writePair(t, dir, "leaf", "expired.example.com")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var (
		clockMu sync.Mutex
		now     = pair.Leaf.NotAfter.Add(-time.Minute)
	)
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	acme := &routes.ACME{Hosts: []string{"expired.example.com"}, Cache: "dir", CacheDir: filepath.Join(dir, "acme"), DirectoryURL: "https://127.0.0.1:1/dir"}
	m := newManager(t, &routes.TLS{ACME: acme}, Options{Now: clock, ACMEWait: 5 * time.Second, ACMERenewBefore: time.Second})
	m.acme.served.Store("expired.example.com", &servedCert{cert: &pair, name: "expired.example.com"})
	hello := &tls.ClientHelloInfo{ServerName: "expired.example.com", SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves: []tls.CurveID{tls.CurveP256}, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
	tests := []struct {
		name    string
		advance time.Duration
		wantErr bool
	}{
		{"a minute before expiry: served", 0, false},
		{"at expiry: not served", time.Minute, true},
		{"after expiry: not served", time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clockMu.Lock()
			now = now.Add(tt.advance)
			clockMu.Unlock()
			got, err := m.getCertificate(hello)
			if tt.wantErr {
				if err == nil || got != nil {
					t.Fatalf("got a certificate (error %v) at %s, it expired at %s", err, clock(), pair.Leaf.NotAfter)
				}
				return
			}
			if err != nil || got != &pair {
				t.Fatalf("got %v, %v; want the certificate in service", got, err)
			}
		})
	}
	if n := m.acme.orders.Load(); n == 0 {
		t.Error("no order was tried for the expired certificate")
	}
}
