package h1server

import (
	"sync"
	"sync/atomic"
	"time"
)

// bgSweep starts the background reads of requests (connReader): one
// goroutine looks, every sweepPeriod, for requests whose handler has run
// for backgroundReadDelay with the body consumed, and starts their reads.
// There is one for the process (sweep), not one per Server: serving
// states, readers included, come from one pool for every Server, and a
// reader the sweep still lists may be armed next by another Server's
// connection.
//
// It replaces a timer per connection. Under load nearly every connection
// has a request armed at all times, so each connection's timer fired
// every few milliseconds, each firing a goroutine that took the
// connection's lock to find the request long answered (2-4 % of the
// engine's CPU samples plus 1-4 % on the lock, with wrk -c64). Here arming
// a request is two atomic operations and, when its reader was not armed
// for keepSweeps sweeps, an append under the sweep's mutex; the sweep
// wakes 1/sweepPeriod times a second, and only while some request was
// armed lately.
//
// The time is counted in sweeps (tick), not read from the clock at every
// request: a request armed during tick t is due from tick t+sweepsDue on,
// so its read starts between backgroundReadDelay and backgroundReadDelay
// + sweepPeriod after it was armed.
type bgSweep struct {
	tick atomic.Uint64

	mu sync.Mutex
	// armed holds the readers armed within the last keepSweeps sweeps
	// (perhaps disarmed since: the sweep drops those it has not seen
	// armed for that long). A reader is in it at most once
	// (connReader.listed, changed only under mu).
	armed []*connReader
	// running: the sweep goroutine runs (it ends when armed is empty).
	running bool
	// dropping, for tests, runs between the look that finds a reader
	// disarmed for a while and its drop (where an arming can land).
	dropping atomic.Pointer[func(*connReader)]
}

// sweep is the process's bgSweep.
var sweep bgSweep

const (
	sweepPeriod = backgroundReadDelay / 2
	sweepsDue   = 3
	// keepSweeps is how long (in sweeps, 20 ms) a reader stays listed
	// after its last arming: the sweep goroutine ends that long after the
	// last request.
	keepSweeps = 8
)

// arm records that cr's request wants a background read from now on. The
// caller holds cr.mu (the lock order is cr.mu, then b.mu; the sweep never
// takes a reader's lock while it holds b.mu).
func (b *bgSweep) arm(cr *connReader) {
	// Ticks start at 1 (running sets it), so 0 means "never armed".
	cr.armed.Store(max(b.tick.Load(), 1)<<1 | 1)
	if cr.listed.Load() {
		return
	}
	b.mu.Lock()
	if !cr.listed.Load() {
		cr.listed.Store(true)
		b.armed = append(b.armed, cr)
		if !b.running {
			b.running = true
			if b.tick.Load() == 0 {
				b.tick.Store(1)
			}
			go b.run()
		}
	}
	b.mu.Unlock()
}

// run is the sweep's goroutine. It is owned by the requests armed: it
// ends once none is, which every Server's Close and Shutdown bring about
// for its own (a request's handler returns and disarms before its
// connection's goroutine ends), like a runtime timer.
func (b *bgSweep) run() {
	t := time.NewTicker(sweepPeriod)
	defer t.Stop()
	var due []*connReader
	for range t.C {
		var more bool
		if due, more = b.sweep(due[:0]); !more {
			return
		}
	}
}

// sweep starts the reads that are due, drops the readers no longer armed,
// and reports whether any is left to wait for (false: the goroutine ends;
// running is cleared under the same lock). due is scratch space, returned
// for the next sweep.
func (b *bgSweep) sweep(due []*connReader) ([]*connReader, bool) {
	now := b.tick.Add(1)
	b.mu.Lock()
	keep := b.armed[:0]
	for _, cr := range b.armed {
		v := cr.armed.Load()
		if v&1 == 0 {
			if v != 0 && now < v>>1+keepSweeps {
				// Disarmed, but armed lately: a connection with
				// requests coming stays listed, so that arming its
				// next one takes no lock.
				keep = append(keep, cr)
				continue
			}
			// Disarmed for a while. A request arming it between the
			// load above and the store below saw listed true and did
			// not append: the load after the store sees its arming
			// (atomics are sequentially consistent), and it is kept.
			if f := b.dropping.Load(); f != nil {
				(*f)(cr)
			}
			cr.listed.Store(false)
			if v = cr.armed.Load(); v&1 == 0 {
				continue
			}
			cr.listed.Store(true)
		}
		if now >= v>>1+sweepsDue {
			// Kept until a later sweep sees it disarmed: fire disarms
			// it under the reader's lock, which is not taken here.
			due = append(due, cr)
		}
		keep = append(keep, cr)
	}
	clear(b.armed[len(keep):])
	b.armed = keep
	more := len(keep) > 0
	if !more {
		b.running = false
	}
	b.mu.Unlock()
	for i, cr := range due {
		cr.fire(now)
		due[i] = nil
	}
	return due, more
}
