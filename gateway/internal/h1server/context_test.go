package h1server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/h1"
)

type ctxTestKey struct{ name string }

// The request's context answers what net/http's server puts in it, holds
// the one value SetValue stores (seen through every context derived from
// it, refused a second time, refused for the keys it answers itself), and
// Cancel ends it and its descendants with the cause given, at once: its
// children register with its cancel context, even under a WithValue,
// rather than wait for a goroutine of their own to pass the cancel on.
func TestRequestContext(t *testing.T) {
	type seen struct {
		server, local    any
		first, second    bool
		reserved         [3]bool
		viaValue, viaCnl any
		other            any
		childErr         error
		childCause       error
		err, cause       error
	}
	results := make(chan seen, 1)
	errCustom := errors.New("bounded by the handler")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		var s seen
		s.server = ctx.Value(http.ServerContextKey)
		s.local = ctx.Value(http.LocalAddrContextKey)
		// Contexts derived before the value is stored see it too: it
		// is in the request's own context.
		early, stop := context.WithCancel(context.WithValue(ctx, ctxTestKey{"unrelated"}, 1))
		defer stop()
		for i, k := range []any{http.ServerContextKey, http.LocalAddrContextKey, requestContextKey{}} {
			s.reserved[i] = SetValue(ctx, k, 1)
		}
		s.first = SetValue(ctx, ctxTestKey{"state"}, "st")
		s.second = SetValue(ctx, ctxTestKey{"other"}, "no")
		s.viaValue = context.WithValue(ctx, ctxTestKey{"unrelated"}, 3).Value(ctxTestKey{"state"})
		s.viaCnl = early.Value(ctxTestKey{"state"})
		s.other = ctx.Value(ctxTestKey{"other"})
		Cancel(early)(errCustom)
		// No wait: a child registered with the request's cancel context
		// is cancelled inside the call.
		s.childErr, s.childCause = early.Err(), context.Cause(early)
		s.err, s.cause = ctx.Err(), context.Cause(ctx)
		results <- s
		_, _ = io.WriteString(w, "ok")
	})
	srv, addr := serveOurs(t, h, nil)
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	s := <-results
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"ServerContextKey", s.server, srv.std},
		{"LocalAddrContextKey", fmt.Sprint(s.local), addr},
		{"first SetValue", s.first, true},
		{"second SetValue", s.second, false},
		{"SetValue(ServerContextKey)", s.reserved[0], false},
		{"SetValue(LocalAddrContextKey)", s.reserved[1], false},
		{"SetValue(requestContextKey)", s.reserved[2], false},
		{"value under a WithValue", s.viaValue, "st"},
		{"value under a child made before it was stored", s.viaCnl, "st"},
		{"value refused", s.other, nil},
		{"child's Err", s.childErr, context.Canceled},
		{"child's Cause", s.childCause, errCustom},
		{"request's Err", s.err, context.Canceled},
		{"request's Cause", s.cause, errCustom},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}
	if Cancel(context.Background()) != nil {
		t.Error("Cancel of a context the server did not make is not nil")
	}
	if SetValue(context.Background(), ctxTestKey{"state"}, 1) {
		t.Error("SetValue on a context the server did not make succeeded")
	}
}

// How a client of TestRequestContextConcurrentClients ends a request.
const (
	stay        = iota // waits for the answer and sends the next request
	leave              // closes the connection while the handler runs
	leaveInHead        // closes after half a head: no handler runs
	leaveAfter         // closes after the answer
	modes
)

// Many keep-alive clients whose requests end at random points: each
// request's context is cancelled when its own client leaves (with the
// cause of a client that left), never while its client still waits (so
// never by another request's client or end), and, kept past the request
// (by a goroutine the handler left, as a plugin's may), it is cancelled
// and still holds its own request's value: it is never handed to another
// request.
func TestRequestContextConcurrentClients(t *testing.T) {
	const clients, perClient = 12, 25
	var (
		mu      sync.Mutex
		started = map[string]chan struct{}{} // closed when the handler runs
		release = map[string]chan struct{}{} // closed to let it answer
		kept    []keptContext
		left    sync.WaitGroup // the handlers' goroutines
		errs    = make(chan error, clients*perClient*2)
	)
	chans := func(id string) (chan struct{}, chan struct{}) {
		mu.Lock()
		defer mu.Unlock()
		if started[id] == nil {
			started[id], release[id] = make(chan struct{}), make(chan struct{})
		}
		return started[id], release[id]
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		mode, _ := strconv.Atoi(r.URL.Query().Get("mode"))
		ctx := r.Context()
		if !SetValue(ctx, ctxTestKey{"id"}, id) {
			errs <- fmt.Errorf("%s: SetValue refused", id)
		}
		mu.Lock()
		kept = append(kept, keptContext{id, ctx})
		mu.Unlock()
		// What a plugin's goroutine may do: keep the context past the
		// request and read it once it ends.
		left.Go(func() {
			<-ctx.Done()
			if got := ctx.Value(ctxTestKey{"id"}); got != id {
				errs <- fmt.Errorf("%s: ended, its context holds %v", id, got)
			}
		})
		st, rel := chans(id)
		close(st)
		switch mode {
		case leave:
			select {
			case <-ctx.Done():
				if c := context.Cause(ctx); c != context.Canceled { //nolint:errorlint // the bare cause is what is checked
					errs <- fmt.Errorf("%s: cause %w, want context.Canceled", id, c)
				}
			case <-time.After(20 * time.Second):
				errs <- fmt.Errorf("%s: its client left, its context was not cancelled", id)
			}
			return
		default:
			select {
			case <-rel:
			case <-ctx.Done():
				errs <- fmt.Errorf("%s: cancelled (%w) while its client waits", id, context.Cause(ctx))
				return
			}
		}
		if got := ctx.Value(ctxTestKey{"id"}); got != id {
			errs <- fmt.Errorf("%s: its context holds %v", id, got)
		}
		_, _ = io.WriteString(w, id)
	})
	_, addr := serveOurs(t, h, nil)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			var conn net.Conn
			var br *bufio.Reader
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for i := range perClient {
				if conn == nil {
					var err error
					if conn, err = net.Dial("tcp", addr); err != nil {
						errs <- err
						return
					}
					br = bufio.NewReader(conn)
				}
				_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
				id := fmt.Sprintf("c%d-%d", c, i)
				mode := rng.IntN(modes)
				head := fmt.Sprintf("GET /?id=%s&mode=%d HTTP/1.1\r\nHost: x\r\n\r\n", id, mode)
				if mode == leaveInHead {
					_, _ = io.WriteString(conn, head[:len(head)/2])
					conn.Close()
					conn = nil
					continue
				}
				if _, err := io.WriteString(conn, head); err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
					return
				}
				st, rel := chans(id)
				<-st
				if mode == leave {
					// Sometimes at once, sometimes once the server
					// reads in the background for a client that leaves.
					time.Sleep(time.Duration(rng.IntN(8)) * time.Millisecond)
					conn.Close()
					conn = nil
					continue
				}
				// Sometimes before the background read starts, sometimes
				// after.
				time.Sleep(time.Duration(rng.IntN(8)) * time.Millisecond)
				close(rel)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(body) != id {
					errs <- fmt.Errorf("%s: answered %q, %w", id, body, err)
					return
				}
				if mode == leaveAfter {
					conn.Close()
					conn = nil
				}
			}
		})
	}
	wg.Wait()
	// Every request is over (answered, or its client gone): the
	// goroutines the handlers left end with their contexts.
	left.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, k := range kept {
		if k.ctx.Err() == nil || k.ctx.Value(ctxTestKey{"id"}) != k.id {
			t.Errorf("%s: the request is over, its context has %v, %v", k.id, k.ctx.Err(), k.ctx.Value(ctxTestKey{"id"}))
		}
	}
}

// keptContext is a request's context kept past its request.
type keptContext struct {
	id  string
	ctx context.Context
}

// The request context's end watch (what the upstream client uses in place
// of context.AfterFunc): found under h1.EndWatchKey through a WithValue,
// with the request's own Done channel; called once, when the request ends
// or is cancelled (Cancel calls it before returning), never after a stop
// that reported true; one watch at a time, a stale stop (an earlier
// watch's number) removing nothing; called at once when set after the end.
func TestRequestContextEndWatch(t *testing.T) {
	type watcher interface {
		Done() <-chan struct{}
		WatchEnd(func()) (uint64, bool)
		StopWatch(uint64) bool
	}
	errCause := errors.New("cause")
	cases := []struct {
		name string
		// run gets the request's context and a function to watch with;
		// it returns what it found wrong, if anything.
		run func(ctx context.Context, w watcher, f func()) string
		// calls after the request ended, and after a watch set then
		// (late: whether to set one on the context kept past the end).
		calls int
		late  bool
	}{
		{name: "called when the request ends", calls: 1, run: func(_ context.Context, w watcher, f func()) string {
			if _, ok := w.WatchEnd(f); !ok {
				return "watch refused"
			}
			return ""
		}},
		{name: "stopped before the end", calls: 0, run: func(_ context.Context, w watcher, f func()) string {
			seq, _ := w.WatchEnd(f)
			if !w.StopWatch(seq) || w.StopWatch(seq) {
				return "stop: want true, then false"
			}
			return ""
		}},
		{name: "Cancel calls it before returning", calls: 1, run: func(ctx context.Context, w watcher, f func()) string {
			called := false
			seq, _ := w.WatchEnd(func() { called = true; f() })
			Cancel(ctx)(errCause)
			if !called || w.StopWatch(seq) || !errors.Is(context.Cause(ctx), errCause) {
				return "not called by Cancel, or stopped after it ran, or cause lost"
			}
			return ""
		}},
		{name: "one at a time, a stale stop removes nothing", calls: 1, run: func(_ context.Context, w watcher, f func()) string {
			first, _ := w.WatchEnd(f)
			if _, ok := w.WatchEnd(f); ok {
				return "a second watch was taken"
			}
			w.StopWatch(first)
			second, ok := w.WatchEnd(f)
			if !ok || second == first || w.StopWatch(first) {
				return "the stale stop removed the new watch"
			}
			return ""
		}},
		{name: "set after the end: called at once", calls: 1, late: true, run: func(context.Context, watcher, func()) string { return "" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls sync.WaitGroup
			var n atomic.Int64
			f := func() { n.Add(1) }
			type result struct {
				w   watcher
				msg string
			}
			results := make(chan result, 1)
			h := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				ctx := context.WithValue(r.Context(), ctxTestKey{"trace"}, 1)
				w, ok := ctx.Value(h1.EndWatchKey{}).(watcher)
				switch {
				case !ok:
					results <- result{msg: "no watcher under h1.EndWatchKey"}
				case w.Done() != ctx.Done():
					results <- result{msg: "the watcher's Done is not the request's"}
				default:
					results <- result{w: w, msg: tc.run(ctx, w, f)}
				}
			})
			_, addr := serveOurs(t, h, nil)
			resp, err := http.Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			res := <-results
			if res.msg != "" {
				t.Fatal(res.msg)
			}
			// The request's end runs before the next request on the
			// connection is read; closing it and waiting for the
			// server's goroutine to finish is what the test can see.
			http.DefaultClient.CloseIdleConnections()
			if tc.late {
				<-res.w.Done()
				calls.Add(1)
				res.w.WatchEnd(func() { f(); calls.Done() })
				calls.Wait()
			}
			deadline := time.Now().Add(10 * time.Second)
			for n.Load() < int64(tc.calls) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond) // a call too many would show now
			if got := n.Load(); got != int64(tc.calls) {
				t.Fatalf("called %d times, want %d", got, tc.calls)
			}
		})
	}
}
