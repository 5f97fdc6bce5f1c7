package h1server

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Readers armed and disarmed as fast as their goroutines can, while the
// sweep drops disarmed ones from its list: an arming that lands between
// the sweep's look and its drop must not be lost. At the end every reader
// is armed once more and must have its read started.
func TestSweepLosesNoArming(t *testing.T) {
	t.Parallel()
	const readers = 32
	s := &Server{}
	// Armings land between the sweep's look and its drop often, not
	// once in a million. (The sweep is the process's: other tests' drops
	// wait too while this one runs, which changes nothing for them.)
	slow := func() { time.Sleep(20 * time.Microsecond) }
	sweep.dropping.Store(&slow)
	defer sweep.dropping.Store(nil)
	type pair struct {
		sv     *serving
		client net.Conn
	}
	pairs := make([]pair, readers)
	for i := range pairs {
		server, client := net.Pipe()
		c := &conn{srv: s, netc: server}
		sv := servings.New().(*serving)
		sv.cr.c = c
		c.sv = sv
		pairs[i] = pair{sv, client}
		t.Cleanup(func() { server.Close(); client.Close() })
	}
	stop := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	for i := range pairs {
		wg.Go(func() {
			cr := &pairs[i].sv.cr
			for n := 0; time.Now().Before(stop); n++ {
				cr.startBackgroundRead()
				if n%16 == 0 {
					time.Sleep(time.Duration(n%7) * time.Millisecond)
				}
				cr.abortPendingRead()
			}
		})
	}
	wg.Wait()
	for i := range pairs {
		pairs[i].sv.cr.startBackgroundRead()
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := range pairs {
		cr := &pairs[i].sv.cr
		for {
			cr.mu.Lock()
			started := cr.inRead
			cr.mu.Unlock()
			if started {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("reader %d: armed, listed %v, never started", i, cr.listed.Load())
			}
			time.Sleep(time.Millisecond)
		}
		cr.abortPendingRead()
	}
}
