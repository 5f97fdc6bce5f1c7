package h1server

import (
	"net"
	"sync"
	"testing"
	"time"
)

// A request armed just as the sweep drops its reader (disarmed for
// keepSweeps) must not be lost: the sweep looks again after clearing the
// reader's listed flag. The test hook arms each reader at that moment,
// once; every reader must then have its read started.
func TestSweepLosesNoArming(t *testing.T) {
	t.Parallel()
	const readers = 32
	s := &Server{}
	var mu sync.Mutex
	ours := map[*connReader]bool{} // ours, not yet armed by the hook
	servs := make([]*serving, readers)
	for i := range servs {
		server, client := net.Pipe()
		c := &conn{srv: s, netc: server}
		sv := servings.New().(*serving)
		sv.cr.c = c
		c.sv = sv
		servs[i] = sv
		ours[&sv.cr] = true
		t.Cleanup(func() { server.Close(); client.Close() })
	}
	// The sweep is the process's: the hook leaves other tests' readers
	// alone.
	hook := func(cr *connReader) {
		mu.Lock()
		arm := ours[cr]
		delete(ours, cr)
		mu.Unlock()
		if arm {
			cr.startBackgroundRead()
		}
	}
	sweep.dropping.Store(&hook)
	defer sweep.dropping.Store(nil)
	for _, sv := range servs {
		sv.cr.startBackgroundRead()
		sv.cr.abortPendingRead()
	}
	deadline := time.Now().Add(10 * time.Second)
	for i, sv := range servs {
		cr := &sv.cr
		for {
			cr.mu.Lock()
			started := cr.inRead
			cr.mu.Unlock()
			if started {
				break
			}
			if time.Now().After(deadline) {
				mu.Lock()
				hooked := !ours[cr]
				mu.Unlock()
				t.Fatalf("reader %d: armed as the sweep dropped it (%v), listed %v, never started", i, hooked, cr.listed.Load())
			}
			time.Sleep(time.Millisecond)
		}
		cr.abortPendingRead()
	}
}
