package gateway

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// testDNS is a real DNS server on loopback UDP whose answers a test sets.
type testDNS struct {
	addr    string
	mu      sync.Mutex
	a       map[string][]string // fqdn -> IPv4 addresses
	srv     map[string][]*dns.SRV
	ttl     uint32
	fail    bool
	queries atomic.Int64
}

func startDNS(t *testing.T) *testDNS {
	t.Helper()
	d := &testDNS{a: map[string][]string{}, srv: map[string][]*dns.SRV{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.addr = pc.LocalAddr().String()
	started := make(chan struct{})
	s := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.serve), NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = s.Shutdown()
		<-done
	})
	return d
}

func (d *testDNS) set(name string, ips ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.a[dns.Fqdn(name)] = ips
}

func (d *testDNS) setSRV(name string, targets ...*dns.SRV) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.srv[dns.Fqdn(name)] = targets
}

func (d *testDNS) setFail(fail bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail = fail
}

func (d *testDNS) serve(w dns.ResponseWriter, r *dns.Msg) {
	d.queries.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(r)
	if d.fail {
		m.Rcode = dns.RcodeServerFailure
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: d.ttl}
	}
	aRecords := func(name string) []dns.RR {
		var rrs []dns.RR
		for _, ip := range d.a[name] {
			rrs = append(rrs, &dns.A{Hdr: hdr(name, dns.TypeA), A: net.ParseIP(ip)})
		}
		return rrs
	}
	_, knownA := d.a[q.Name]
	_, knownSRV := d.srv[q.Name]
	switch {
	case !knownA && !knownSRV:
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeA:
		m.Answer = aRecords(q.Name)
	case q.Qtype == dns.TypeSRV:
		for _, s := range d.srv[q.Name] {
			cp := *s
			cp.Hdr = hdr(q.Name, dns.TypeSRV)
			m.Answer = append(m.Answer, &cp)
			m.Extra = append(m.Extra, aRecords(s.Target)...)
		}
	}
	_ = w.WriteMsg(m)
}

// backendOn starts a backend on ip at the given port.
func backendOn(t *testing.T, name, ip, port string) *backend {
	return newBackend(t, name, net.JoinHostPort(ip, port))
}

func TestDNSDiscovery(t *testing.T) {
	d := startDNS(t)
	one := newBackend(t, "one", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(one.addr)
	two := backendOn(t, "two", "127.0.0.2", port)
	d.set("svc.test", "127.0.0.1")
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u:
    dns: "svc.test:%s"
    dns_server: %q
    dns_refresh: {min: 20ms, max: 1s}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, port, d.addr))
	if codes := send(t, te.url+"/", 20, 1); codes[200] != 20 || one.hits.Load() != 20 {
		t.Fatalf("statuses %v, hits %d", codes, one.hits.Load())
	}

	// A request in flight on the old endpoint finishes after the change.
	release := one.holdRequests()
	inflight := make(chan int, 1)
	go func() {
		resp, err := trafficClient.Get(te.url + "/")
		if err != nil {
			inflight <- -1
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	waitFor(t, func() bool { return one.held.Load() == 1 })

	d.set("svc.test", "127.0.0.2")
	// Requests sent before the new answer would wait on the held one.
	waitFor(t, func() bool {
		eps := readyz(t, te)["u"].Endpoints
		return len(eps) == 1 && eps[0].Endpoint == two.addr
	})
	release()
	if code := <-inflight; code != 200 {
		t.Fatalf("in-flight request across the change: %d", code)
	}
	resetHits([]*backend{one, two})
	if codes := send(t, te.url+"/", 20, 1); codes[200] != 20 || two.hits.Load() != 20 {
		t.Fatalf("after the change: %v, two got %d", codes, two.hits.Load())
	}

	t.Run("a resolver failure keeps the last answer", func(t *testing.T) {
		d.setFail(true)
		before := d.queries.Load()
		waitFor(t, func() bool { return d.queries.Load() > before+2 })
		if codes := send(t, te.url+"/", 20, 1); codes[200] != 20 {
			t.Fatalf("statuses %v", codes)
		}
		d.setFail(false)
	})
	t.Run("both addresses", func(t *testing.T) {
		d.set("svc.test", "127.0.0.1", "127.0.0.2")
		waitFor(t, func() bool { return len(readyz(t, te)["u"].Endpoints) == 2 })
		resetHits([]*backend{one, two})
		send(t, te.url+"/", 20, 1)
		if one.hits.Load() != 10 || two.hits.Load() != 10 {
			t.Fatalf("hits %d %d", one.hits.Load(), two.hits.Load())
		}
	})
}

// A long TTL is respected: no question is asked again before it runs out.
func TestDNSTTLRespected(t *testing.T) {
	d := startDNS(t)
	d.ttl = 3600
	b := newBackend(t, "b", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(b.addr)
	d.set("svc.test", "127.0.0.1")
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {dns: "svc.test:%s", dns_server: %q, dns_refresh: {min: 1ms, max: 2h}}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, port, d.addr))
	asked := d.queries.Load() // A and AAAA
	if codes := send(t, te.url+"/", 200, 4); codes[200] != 200 {
		t.Fatalf("statuses %v", codes)
	}
	if n := d.queries.Load(); n != asked || n != 2 {
		t.Fatalf("%d DNS questions (first resolution asked %d)", n, asked)
	}
}

func TestDNSSRVDiscovery(t *testing.T) {
	d := startDNS(t)
	a := newBackend(t, "a", "127.0.0.1:0")
	b := newBackend(t, "b", "127.0.0.1:0")
	port := func(s *backend) uint16 {
		_, p, _ := net.SplitHostPort(s.addr)
		var n uint16
		if _, err := fmt.Sscan(p, &n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	d.set("a.test", "127.0.0.1")
	d.set("b.test", "127.0.0.1")
	d.setSRV("_http._tcp.svc.test",
		&dns.SRV{Priority: 10, Weight: 1, Port: port(a), Target: "a.test."},
		&dns.SRV{Priority: 10, Weight: 3, Port: port(b), Target: "b.test."},
		&dns.SRV{Priority: 20, Weight: 1, Port: 1, Target: "a.test."}, // a backup: not used
	)
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u:
    dns_srv: _http._tcp.svc.test
    dns_server: %q
    dns_refresh: {min: 20ms, max: 1s}
    balance: weighted
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, d.addr))
	if codes := send(t, te.url+"/", 40, 1); codes[200] != 40 || a.hits.Load() != 10 || b.hits.Load() != 30 {
		t.Fatalf("statuses %v, hits a %d b %d (SRV weights 1:3)", codes, a.hits.Load(), b.hits.Load())
	}
	d.setSRV("_http._tcp.svc.test", &dns.SRV{Priority: 10, Weight: 1, Port: port(a), Target: "a.test."})
	waitFor(t, func() bool { return len(readyz(t, te)["u"].Endpoints) == 1 })
	resetHits([]*backend{a, b})
	if codes := send(t, te.url+"/", 20, 1); codes[200] != 20 || a.hits.Load() != 20 {
		t.Fatalf("statuses %v, hits a %d b %d", codes, a.hits.Load(), b.hits.Load())
	}
}

func TestFileDiscovery(t *testing.T) {
	one := newBackend(t, "one", "127.0.0.1:0")
	two := newBackend(t, "two", "127.0.0.1:0")
	path := filepath.Join(t.TempDir(), "endpoints.txt")
	writeFile(t, path, "# the orders service\n"+one.addr+"\n")
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {endpoints_file: %q, balance: weighted}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, path))
	if codes := send(t, te.url+"/", 10, 1); codes[200] != 10 || one.hits.Load() != 10 {
		t.Fatalf("statuses %v", codes)
	}
	writeFile(t, path, one.addr+" 1\n"+two.addr+" 3 # bigger\n")
	waitFor(t, func() bool { return len(readyz(t, te)["u"].Endpoints) == 2 })
	resetHits([]*backend{one, two})
	send(t, te.url+"/", 40, 1)
	if one.hits.Load() != 10 || two.hits.Load() != 30 {
		t.Fatalf("hits %d %d", one.hits.Load(), two.hits.Load())
	}
	t.Run("a bad version keeps the last good set", func(t *testing.T) {
		writeFile(t, path, "not an endpoint\n")
		writeFile(t, path, two.addr+" 3\nnope\n")
		// The bad file is refused; the set stays at two endpoints. A good
		// file after it is taken.
		writeFile(t, path, two.addr+"\n")
		waitFor(t, func() bool { return len(readyz(t, te)["u"].Endpoints) == 1 })
	})
}

// A configuration whose endpoints file is missing is refused at load.
func TestFileDiscoveryRefusesMissingFile(t *testing.T) {
	_, err := buildRuntimeFromYAML(t, `version: 1
upstreams:
  u: {endpoints_file: /nonexistent/endpoints.txt}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`)
	if err == nil || !strings.Contains(err.Error(), "endpoints_file") {
		t.Fatalf("got %v", err)
	}
}
