package refpool

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type res struct {
	id     int
	closed atomic.Int32
}

func TestAcquireRelease(t *testing.T) {
	t.Parallel()
	var built atomic.Int32
	p := New[string](func(r *res) error { r.closed.Add(1); return nil })
	mk := func() (*res, error) { return &res{id: int(built.Add(1))}, nil }

	a, loaded, err := p.Acquire("k", mk)
	if err != nil || loaded {
		t.Fatalf("first Acquire: loaded=%v err=%v", loaded, err)
	}
	b, loaded, err := p.Acquire("k", mk)
	if err != nil || !loaded || b != a {
		t.Fatalf("second Acquire must share the value: loaded=%v same=%v err=%v", loaded, a == b, err)
	}
	if c, ok := p.Load("k"); !ok || c != a {
		t.Fatal("Load must return the held value")
	}
	if _, ok := p.Load("other"); ok {
		t.Fatal("Load of an unknown key must fail")
	}
	if got := p.References("k"); got != 3 {
		t.Fatalf("References = %d, want 3", got)
	}
	for i, wantDeleted := range []bool{false, false, true} {
		deleted, err := p.Release("k")
		if err != nil || deleted != wantDeleted {
			t.Fatalf("release %d: deleted=%v err=%v", i, deleted, err)
		}
	}
	if a.closed.Load() != 1 {
		t.Fatalf("closed %d times, want once", a.closed.Load())
	}
	// A key emptied and acquired again gets a new value.
	d, loaded, _ := p.Acquire("k", mk)
	if loaded || d == a {
		t.Fatal("an Acquire after the last Release must build afresh")
	}
	_, _ = p.Release("k")
	if p.Len() != 0 {
		t.Fatalf("Len = %d after every release", p.Len())
	}
}

func TestConstructFailure(t *testing.T) {
	t.Parallel()
	p := New[string, *res](nil)
	boom := errors.New("boom")
	if _, _, err := p.Acquire("k", func() (*res, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if p.Len() != 0 || p.References("k") != 0 {
		t.Fatal("a failed construct must leave nothing held")
	}
	if _, loaded, err := p.Acquire("k", func() (*res, error) { return &res{}, nil }); err != nil || loaded {
		t.Fatalf("retry after failure: loaded=%v err=%v", loaded, err)
	}
	_, _ = p.Release("k")
}

// A constructor that panics leaves the key free and does not strand the
// callers waiting for it.
func TestConstructPanic(t *testing.T) {
	t.Parallel()
	p := New[string, *res](nil)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the constructor's panic was swallowed")
			}
		}()
		_, _, _ = p.Acquire("k", func() (*res, error) { panic("boom") })
	}()
	if p.Len() != 0 {
		t.Fatal("a panicking construct left the key held")
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := p.Acquire("k", func() (*res, error) { return &res{}, nil })
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, _ = p.Release("k")
}

func TestReleaseUnheldPanics(t *testing.T) {
	t.Parallel()
	p := New[string, *res](nil)
	defer func() {
		if recover() == nil {
			t.Fatal("releasing an unheld key must panic")
		}
	}()
	_, _ = p.Release("nope")
}

// Many goroutines acquiring and releasing the same few keys: every value is
// built once per lifetime, closed exactly once, and never handed out after
// it was closed.
func TestConcurrentAcquireRelease(t *testing.T) {
	t.Parallel()
	var built, closedTotal atomic.Int64
	p := New[int](func(r *res) error {
		if r.closed.Add(1) != 1 {
			t.Errorf("value %d closed twice", r.id)
		}
		closedTotal.Add(1)
		return nil
	})
	var wg sync.WaitGroup
	const workers, rounds, keys = 16, 2000, 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				k := (w + i) % keys
				v, _, err := p.Acquire(k, func() (*res, error) {
					return &res{id: int(built.Add(1))}, nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				if v.closed.Load() != 0 {
					t.Errorf("got value %d after it was closed", v.id)
				}
				if _, err := p.Release(k); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if p.Len() != 0 {
		t.Fatalf("Len = %d after every release", p.Len())
	}
	if built.Load() != closedTotal.Load() {
		t.Fatalf("built %d values, closed %d", built.Load(), closedTotal.Load())
	}
}

// Callers of one key wait for its single construct; other keys do not.
func TestConstructOncePerKey(t *testing.T) {
	t.Parallel()
	p := New[string, *res](nil)
	release := make(chan struct{})
	var calls atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, _ = p.Acquire("slow", func() (*res, error) {
				calls.Add(1)
				<-release
				return &res{}, nil
			})
		}()
	}
	// Another key is not held up by the slow one.
	if _, _, err := p.Acquire("fast", func() (*res, error) { return &res{}, nil }); err != nil {
		t.Fatal(err)
	}
	close(release)
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("construct ran %d times for one key", calls.Load())
	}
	if got := p.References("slow"); got != 8 {
		t.Fatalf("References = %d, want 8", got)
	}
	n := 0
	p.Range(func(string, *res) bool { n++; return true })
	if n != 2 {
		t.Fatalf("Range saw %d values, want 2", n)
	}
	for range 8 {
		_, _ = p.Release("slow")
	}
	_, _ = p.Release("fast")
	if p.Len() != 0 {
		t.Fatalf("Len = %d after every release", p.Len())
	}
}
