//go:build linux

package h1server

import (
	"container/heap"
	"errors"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// parker holds the server's parked connections: idle keep-alive
// connections that have no goroutine and no buffer, only a registration in
// an epoll instance of the server's own (one shot: readable, or the peer
// half-closed or reset) and, when an idle timeout applies, a place in a
// deadline heap. One goroutine waits on the epoll instance; a connection
// that becomes readable, reaches its idle deadline, or is woken by
// shutdown is taken out of both and served by a new goroutine.
//
// Ownership is what keeps a descriptor number from being reused under the
// poller: while a connection is parked the parker owns it and nobody
// closes it (Shutdown and Close wake it instead), and the registration is
// removed, under mu, before the connection is handed back to a goroutine,
// the only thing that may close it.
type parker struct {
	epfd   int
	wakefd int // an eventfd: stops the wait when the heap's head changes or at close
	now    func() time.Time

	mu     sync.Mutex
	closed bool
	// The parked connections by slot (nil: free), and the free slots. A
	// token, the epoll event's data, is a slot (its low 32 bits, plus one:
	// zero is wakeToken's) and a count of parks (its high 32 bits), so
	// that an event for a slot since reused is told apart. 8-12 bytes per
	// parked connection, where a map cost 30-40.
	slots  []*conn
	free   []uint32
	n      int // connections parked
	gen    uint32
	byTime deadlineHeap
	// waitUntil is the deadline the wait in progress ends at, in unix
	// nanoseconds (zero: none).
	waitUntil int64

	done chan struct{} // closed when the goroutine has returned
}

// wakeToken is the eventfd's token; connections' start at 1.
const wakeToken = 0

func newParker(now func() time.Time) (*parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, wakeToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, err
	}
	p := &parker{epfd: epfd, wakefd: wakefd, now: now, done: make(chan struct{})}
	go p.run()
	return p, nil
}

func setToken(ev *unix.EpollEvent, tok uint64) {
	ev.Fd = int32(uint32(tok))
	ev.Pad = int32(uint32(tok >> 32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// park registers c, whose goroutine is about to return, and says whether
// it did: false when the server is closing, when Shutdown or Close took
// the connection first, or when the socket cannot be registered (then the
// goroutine goes on waiting itself). c.raw is its socket, c.idleUntil its
// idle deadline (zero: none).
func (p *parker) park(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !c.state.CompareAndSwap(stateIdle, stateParked) {
		return false
	}
	var slot uint32
	if k := len(p.free); k > 0 {
		slot = p.free[k-1]
		p.free = p.free[:k-1]
	} else {
		slot = uint32(len(p.slots))
		p.slots = append(p.slots, nil)
	}
	p.gen++
	tok := uint64(p.gen)<<32 | uint64(slot+1)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setToken(&ev, tok)
	var addErr error
	if err := c.raw.Control(func(fd uintptr) {
		addErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	}); err != nil || addErr != nil {
		c.state.Store(stateIdle)
		p.free = append(p.free, slot)
		return false
	}
	c.parkToken = tok
	p.slots[slot] = c
	p.n++
	c.heapIndex = -1
	if until := c.idleUntil; until != 0 {
		heap.Push(&p.byTime, c)
		if c.heapIndex == 0 && (p.waitUntil == 0 || until < p.waitUntil) {
			p.wakeLocked()
		}
	}
	return true
}

// unparkLocked takes c out of the epoll instance and the heap and hands it
// to a new goroutine. The registration goes before anything else can
// close the descriptor.
func (p *parker) unparkLocked(c *conn) {
	_ = c.raw.Control(func(fd uintptr) {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
	slot := uint32(c.parkToken) - 1
	p.slots[slot] = nil
	p.free = append(p.free, slot)
	p.n--
	if p.n == 0 && cap(p.slots) > 64 {
		// Give back what a burst of parked connections grew.
		p.slots, p.free = nil, nil
	}
	if c.heapIndex >= 0 {
		heap.Remove(&p.byTime, int(c.heapIndex))
	}
	c.parkToken = 0
	c.woken = true
	// Back to idle before the goroutine exists: Shutdown may close it
	// from here on, as any idle connection.
	c.state.Store(stateIdle)
	go c.resume()
}

// lookup is the connection parked under tok, nil when it is no longer.
func (p *parker) lookup(tok uint64) *conn {
	slot := uint64(uint32(tok)) - 1
	if slot >= uint64(len(p.slots)) {
		return nil
	}
	if c := p.slots[slot]; c != nil && c.parkToken == tok {
		return c
	}
	return nil
}

func (p *parker) wakeLocked() {
	var one = [8]byte{1}
	_, _ = unix.Write(p.wakefd, one[:])
}

// close wakes every parked connection (each goroutine then sees the server
// closing and closes its connection), stops the goroutine, and waits for
// it.
func (p *parker) close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		for _, c := range p.slots {
			if c != nil {
				p.unparkLocked(c)
			}
		}
		p.wakeLocked()
	}
	p.mu.Unlock()
	<-p.done
}

func (p *parker) run() {
	defer close(p.done)
	defer unix.Close(p.wakefd)
	defer unix.Close(p.epfd)
	events := make([]unix.EpollEvent, 128)
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		timeout := -1
		p.waitUntil = 0
		if len(p.byTime) > 0 {
			p.waitUntil = p.byTime[0].idleUntil
			// Rounded up: woken early, a connection would only find
			// its deadline not yet passed and park again.
			timeout = int((deadline(p.waitUntil).Sub(p.now()) + time.Millisecond - 1) / time.Millisecond)
			timeout = max(timeout, 0)
		}
		p.mu.Unlock()
		n, err := unix.EpollWait(p.epfd, events, timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			// Not expected of a valid epoll instance: keep serving the
			// deadlines rather than spin.
			n = 0
		}
		p.mu.Lock()
		for i := range max(n, 0) {
			tok := token(&events[i])
			if tok == wakeToken {
				var b [8]byte
				_, _ = unix.Read(p.wakefd, b[:])
				continue
			}
			// A token no longer parked was woken by other means in
			// between: its event is stale.
			if c := p.lookup(tok); c != nil {
				p.unparkLocked(c)
			}
		}
		now := p.now().UnixNano()
		for len(p.byTime) > 0 && p.byTime[0].idleUntil <= now {
			p.unparkLocked(p.byTime[0])
		}
		p.mu.Unlock()
	}
}

// deadlineHeap orders parked connections by idle deadline.
type deadlineHeap []*conn

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].idleUntil < h[j].idleUntil }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex, h[j].heapIndex = int32(i), int32(j)
}

func (h *deadlineHeap) Push(x any) {
	c := x.(*conn)
	c.heapIndex = int32(len(*h))
	*h = append(*h, c)
}

func (h *deadlineHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.heapIndex = -1
	return c
}

// parkedConns is how many connections are parked now (tests).
func (s *Server) parkedConns() int {
	s.mu.Lock()
	p := s.pk
	s.mu.Unlock()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}
