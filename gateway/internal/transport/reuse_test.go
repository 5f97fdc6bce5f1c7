package transport

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh"
)

// No client ever sees bytes meant for, or sent after, another request:
// whatever an upstream sends that answers nothing we asked closes the
// connection, whether it arrives with the response, after it, or while
// the connection is idle. Over TLS the stray bytes also come in the
// response's own record (so crypto/tls holds them decrypted), in a record
// of their own right behind it (held undecrypted, or still in the socket)
// and later.
func TestH1TransportNeverHandsStrayBytesToTheNextRequest(t *testing.T) {
	modes := []struct {
		mode, first string // first: the request that provokes stray bytes
		late        bool
		settle      bool // the stray write is let land before the next request
	}{
		{"body after HEAD", http.MethodHead, false, false},
		{"late body after HEAD", http.MethodHead, true, false},
		{"body after 204", http.MethodGet, false, false},
		{"body after 304", http.MethodGet, false, false},
		{"more body than Content-Length", http.MethodGet, false, false},
		{"more body in a later write", http.MethodGet, false, true},
		{"unsolicited response while idle", http.MethodGet, true, false},
	}
	mt := newMeshTLS(t)
	upstreams := []struct {
		name   string
		scheme string
		start  func(t *testing.T, mode string, before, after func()) string
		pool   func(t *testing.T) http.RoundTripper
	}{
		{"plain", "http", func(t *testing.T, mode string, before, after func()) string {
			return testutil.HostileUpstream(t, mode, before, after)
		}, func(t *testing.T) http.RoundTripper { return newTestPool(t, 4, 0) }},
		{"mTLS", "https", func(t *testing.T, mode string, before, after func()) string {
			return testutil.HostileUpstreamTLS(t, mt.server, mode, before, after)
		}, func(t *testing.T) http.RoundTripper { return mt.pool(t, 4, 0, sidecarID) }},
		// An https upstream's ordinary requests go through http.Transport
		// over TLS (CertBound, as proxy.NewTransportPool builds it), with
		// an upstream that speaks HTTP/1.1 only.
		{"https via http.Transport", "https", func(t *testing.T, mode string, before, after func()) string {
			cfg := mt.server.Clone()
			cfg.NextProtos = []string{"http/1.1"}
			return testutil.HostileUpstreamTLS(t, cfg, mode, before, after)
		}, func(t *testing.T) http.RoundTripper { return mt.httpsPool(t, sidecarID) }},
	}
	const rounds = 300
	for _, up := range upstreams {
		for _, m := range modes {
			t.Run(up.name+"/"+m.mode, func(t *testing.T) {
				t.Parallel()
				strayBytesRounds(t, up.scheme, m.first, m.late, m.settle, rounds, func(before, after func()) string {
					return up.start(t, m.mode, before, after)
				}, up.pool)
			})
		}
	}
}

// strayBytesRounds runs rounds of a request that provokes stray bytes and
// one that must get its own answer, on the upstream start starts.
//
// The pool is made after the upstream, so its cleanup (closing the idle
// connections) runs before the upstream's, which waits for its
// connections to end.
func strayBytesRounds(t *testing.T, scheme, method string, late, settle bool, rounds int, start func(before, after func()) string, pool func(*testing.T) http.RoundTripper) {
	t.Helper()
	// The client says when the first response is read (the connection is
	// idle); the upstream says when the stray bytes are out. Both channels
	// are buffered so that neither side blocks once the other has stopped.
	idle, wrote := make(chan struct{}, rounds), make(chan struct{}, rounds)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	addr := start(func() {
		select {
		case <-idle:
		case <-done:
		}
	}, func() { wrote <- struct{}{} })
	h1 := pool(t)
	for i := range rounds {
		first := fmt.Sprintf("/empty/%d", i)
		req, _ := http.NewRequest(method, scheme+"://"+addr+first, nil)
		resp, err := h1.RoundTrip(req)
		if err != nil {
			t.Fatalf("round %d, %s %s: %v", i, method, first, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if method == http.MethodGet && resp.StatusCode == http.StatusOK && string(b) != "resp:"+first {
			t.Fatalf("round %d: %s got %q", i, first, b)
		}
		if late {
			idle <- struct{}{}
			<-wrote
			// The bytes are written; give them a moment to land in the
			// socket, as they would on any real network.
			time.Sleep(time.Millisecond)
		}
		if settle {
			// Bytes that arrive after the check are indistinguishable
			// from an answer on HTTP/1.1; what is tested is that those
			// already there (in crypto/tls's buffers or the socket) are
			// seen.
			<-wrote
			time.Sleep(time.Millisecond)
		}
		next := fmt.Sprintf("/next/%d", i)
		_, body, err := testutil.RoundTripGet(t, h1, context.Background(), scheme+"://"+addr+next)
		if err != nil {
			t.Fatalf("round %d, GET %s: %v", i, next, err)
		}
		if body != "resp:"+next {
			t.Fatalf("round %d: GET %s got %q: another request's bytes", i, next, body)
		}
	}
}

// An idle connection found past the idle timeout before its own timer
// removed it is closed without the pool losing track of the others: the
// stack is stored before the lock is let go, so a request racing in never
// takes the slot just emptied (a nil connection) and a connection put back
// meanwhile is neither lost nor kept twice.
func TestH1TransportExpiredIdleConnsUnderConcurrency(t *testing.T) {
	srv, accepted := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	const conns, rounds = 16, 200
	h1 := newTestPool(t, conns, 0)
	get := func() error {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
		resp, err := h1.RoundTrip(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	// burst sends conns requests at once.
	burst := func(round int) {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range conns {
			wg.Go(func() {
				<-start
				if err := get(); err != nil {
					t.Errorf("round %d: %v", round, err)
				}
			})
		}
		close(start)
		wg.Wait()
	}
	host := srv.Listener.Addr().String()
	for round := range rounds {
		// Fill the pool with conns idle connections, then age them all
		// past the timeout with their timers stopped, as if each timer
		// were about to fire.
		burst(round)
		h1.mu.Lock()
		for _, c := range h1.idle[host] {
			c.idleAt = c.idleAt.Add(-2 * h1.idleTimeout)
			if c.timer != nil {
				c.timer.Stop()
				c.timerArmed = false
			}
		}
		h1.mu.Unlock()
		// Every request now finds only expired connections and dials,
		// concurrently with the others closing theirs and putting back.
		burst(round)
		if t.Failed() {
			return
		}
		h1.mu.Lock()
		seen := map[*h1Conn]bool{}
		for _, c := range h1.idle[host] {
			if c == nil || seen[c] || !c.inIdle {
				h1.mu.Unlock()
				t.Fatalf("round %d: the idle stack holds a nil, repeated or busy connection", round)
			}
			seen[c] = true
		}
		h1.mu.Unlock()
	}
	t.Logf("%d connections accepted", accepted.Load())
}

// The idle timer is armed lazily: it may fire while its connection is in
// use, or idle for less than the timeout because it was used since the
// timer was armed. Neither may close the connection; only an idle period
// of the whole timeout does. Each step calls expire as the timer would.
func TestH1TransportIdleTimerFiresEarly(t *testing.T) {
	srv, accepted := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	h1 := newTestPool(t, 4, notATimeout)
	host := srv.Listener.Addr().String()
	get := func() {
		t.Helper()
		if _, body, err := testutil.RoundTripGet(t, h1, context.Background(), srv.URL+"/"); err != nil || body != "ok" {
			t.Fatalf("GET: %q %v", body, err)
		}
	}
	idleConn := func() *h1Conn {
		t.Helper()
		h1.mu.Lock()
		defer h1.mu.Unlock()
		if len(h1.idle[host]) != 1 {
			t.Fatalf("%d idle connections, want 1", len(h1.idle[host]))
		}
		c := h1.idle[host][0]
		if !c.timerArmed {
			t.Fatal("an idle connection without a pending idle timer")
		}
		return c
	}
	get()
	c := idleConn()

	// Used again since the timer was armed: idle for less than the timeout.
	c.expire()
	if idleConn() != c {
		t.Fatal("the timer closed a connection idle for less than the timeout")
	}

	// Fired while the connection is in use: it stays usable and is armed
	// again when it is put back.
	got, reused, err := h1.getConn(context.Background(), host)
	if err != nil || got != c || !reused {
		t.Fatalf("getConn: %p reused=%v %v, want the idle connection", got, reused, err)
	}
	c.expire()
	h1.putConn(c)
	if idleConn() != c {
		t.Fatal("the connection was lost after its timer fired while in use")
	}
	get()
	if n := accepted.Load(); n != 1 {
		t.Fatalf("%d connections accepted, want 1", n)
	}

	// Idle for the whole timeout: closed and forgotten.
	h1.mu.Lock()
	c.idleAt = c.idleAt.Add(-2 * h1.idleTimeout)
	h1.mu.Unlock()
	c.expire()
	h1.mu.Lock()
	n := len(h1.idle[host])
	h1.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d idle connections after the idle timeout, want 0", n)
	}
	get()
	if n := accepted.Load(); n != 2 {
		t.Fatalf("%d connections accepted after the idle timeout, want 2", n)
	}

	// A connection closed while in use (its timer still pending from the
	// idle period before) stops its timer: a pending one would keep the
	// dead connection and its buffers reachable for up to the timeout.
	c, _, err = h1.getConn(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	c.close()
	if c.timer.Stop() {
		t.Fatal("a closed connection's idle timer is still pending")
	}
}

// httpsPool is the pool of an https upstream (no mesh identity, protocol
// left as it is) toward a server that must be want, built as
// proxy.NewTransportPool builds it: upgrades go to H1 over TLS, every
// other request to http.Transport (CertBound).
func (m *meshTLS) httpsPool(t *testing.T, want string) *TLSUpgrades {
	t.Helper()
	id, err := mesh.ParseID(want)
	if err != nil {
		t.Fatal(err)
	}
	p := NewTLSUpgrades(m.transport(id), nil)
	t.Cleanup(p.CloseIdleConnections)
	return p
}
