// Package refpool shares long-lived resources (connection pools, tracers,
// log files, Redis clients) between the configurations that use them.
//
// A reload builds a new configuration while the old one still serves, and
// most of what the new one needs is unchanged: the same upstream pool, the
// same access-log file. The pool hands the existing value to the new
// configuration under the same key instead of building a second one, and
// closes a value when its last user lets go of it. This is the shape of
// Caddy's UsagePool: one counted map per kind of resource, owned by the
// server that runs the configurations, rather than a reference count
// inside every resource type.
package refpool

import (
	"fmt"
	"sync"
)

// Pool counts the users of values of type V by key. The zero value is not
// usable; call New.
type Pool[K comparable, V any] struct {
	close func(V) error

	mu sync.Mutex
	m  map[K]*entry[V]
}

type entry[V any] struct {
	refs int
	// ready is closed once the constructor has run; v and err are set
	// before that and read only after it.
	ready chan struct{}
	v     V
	err   error
}

// New returns an empty pool; free frees a value once its last reference
// is released (nil: nothing to free).
func New[K comparable, V any](free func(V) error) *Pool[K, V] {
	if free == nil {
		free = func(V) error { return nil }
	}
	return &Pool[K, V]{close: free, m: map[K]*entry[V]{}}
}

// Acquire takes a reference to the value under key, building it with
// construct when nobody holds one. loaded says whether the value existed.
// construct runs without the pool's lock, so a slow one (a TLS handshake,
// a file on a slow disk) holds up only callers of the same key, which wait
// for its result. When construct fails, no reference is taken and every
// caller waiting for that key gets the error.
func (p *Pool[K, V]) Acquire(key K, construct func() (V, error)) (v V, loaded bool, err error) {
	p.mu.Lock()
	if e, ok := p.m[key]; ok {
		e.refs++
		p.mu.Unlock()
		if err := p.wait(e); err != nil {
			return v, false, err
		}
		return e.v, true, nil
	}
	e := &entry[V]{refs: 1, ready: make(chan struct{})}
	p.m[key] = e
	p.mu.Unlock()

	built := false
	defer func() {
		// Also when construct panics: the callers waiting for this key
		// must not wait forever, and the key must not stay taken.
		if !built && e.err == nil {
			e.err = fmt.Errorf("refpool: constructing %v panicked", key)
		}
		if e.err != nil {
			p.mu.Lock()
			e.refs--
			if p.m[key] == e {
				delete(p.m, key) // the next Acquire tries again
			}
			p.mu.Unlock()
		}
		close(e.ready)
	}()
	e.v, e.err = construct()
	built = true
	return e.v, false, e.err
}

// Load takes a reference to the value under key if one is held.
func (p *Pool[K, V]) Load(key K) (v V, ok bool) {
	p.mu.Lock()
	e, found := p.m[key]
	if !found {
		p.mu.Unlock()
		return v, false
	}
	e.refs++
	p.mu.Unlock()
	if p.wait(e) != nil {
		return v, false
	}
	return e.v, true
}

// wait waits for e, on which the caller took a reference, to be built;
// when building failed it gives the reference back and returns the error.
func (p *Pool[K, V]) wait(e *entry[V]) error {
	<-e.ready
	if e.err != nil {
		p.mu.Lock()
		e.refs--
		p.mu.Unlock()
	}
	return e.err
}

// Release drops one reference to the value under key; the last one removes
// it from the pool and closes it, returning close's error. deleted says
// whether this call was the last. Releasing a key nobody holds is a
// programming error and panics: a double release would close a value that
// another configuration still uses.
func (p *Pool[K, V]) Release(key K) (deleted bool, err error) {
	p.mu.Lock()
	e, ok := p.m[key]
	if !ok {
		p.mu.Unlock()
		panic(fmt.Sprintf("refpool: release of %v, which no one holds", key))
	}
	e.refs--
	if e.refs > 0 {
		p.mu.Unlock()
		return false, nil
	}
	delete(p.m, key)
	p.mu.Unlock()
	// Outside the lock: closing may wait (a flush, a drain), and an
	// Acquire of the same key meanwhile builds a fresh value.
	<-e.ready
	return true, p.close(e.v)
}

// References is the number of references held under key (0: none).
func (p *Pool[K, V]) References(key K) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.m[key]; ok {
		return e.refs
	}
	return 0
}

// Len is the number of keys held.
func (p *Pool[K, V]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}

// Range calls f with every value that is built, until f returns false. It
// takes no reference: f must not keep the value.
func (p *Pool[K, V]) Range(f func(K, V) bool) {
	p.mu.Lock()
	type kv struct {
		k K
		v V
	}
	var all []kv
	for k, e := range p.m {
		select {
		case <-e.ready:
			if e.err == nil {
				all = append(all, kv{k, e.v})
			}
		default: // still being built
		}
	}
	p.mu.Unlock()
	for _, x := range all {
		if !f(x.k, x.v) {
			return
		}
	}
}
