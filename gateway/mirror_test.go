package gateway

import (
	"fmt"
	"testing"
)

func mirrorConfig(primary, shadow, mirror string) string {
	return listenHeader + fmt.Sprintf(`upstreams:
  u:
    endpoints: [%q]
    mirror: %s
  shadow: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, primary, mirror, shadow)
}

func TestMirror(t *testing.T) {
	t.Run("every request copied, answers from the primary", func(t *testing.T) {
		primary := newBackend(t, "primary", "127.0.0.1:0")
		shadow := newBackend(t, "shadow", "127.0.0.1:0")
		shadow.status.Store(500) // the shadow's answers never reach the client
		te := startEdge(t, mirrorConfig(primary.addr, shadow.addr, "{upstream: shadow}"))
		codes := sendMethod(t, "POST", te.url+"/", "hello", 50, 2)
		if codes[200] != 50 {
			t.Fatalf("statuses %v", codes)
		}
		// The backend counts a hit before it reads the body: wait for
		// both, so a loaded machine cannot catch the last body mid-read.
		waitFor(t, func() bool { return shadow.hits.Load() == 50 && shadow.bodies.Load() >= 50*5 })
		if shadow.mirrors.Load() != 50 || primary.mirrors.Load() != 0 {
			t.Fatalf("mirror header: shadow %d, primary %d", shadow.mirrors.Load(), primary.mirrors.Load())
		}
		if shadow.bodies.Load() != 50*5 {
			t.Fatalf("shadow got %d body bytes", shadow.bodies.Load())
		}
	})
	t.Run("a stuck shadow costs nothing beyond max_inflight", func(t *testing.T) {
		primary := newBackend(t, "primary", "127.0.0.1:0")
		shadow := newBackend(t, "shadow", "127.0.0.1:0")
		release := shadow.holdRequests()
		te := startEdge(t, mirrorConfig(primary.addr, shadow.addr, "{upstream: shadow, max_inflight: 2}"))
		codes := send(t, te.url+"/", 50, 2)
		if codes[200] != 50 {
			t.Fatalf("statuses %v", codes)
		}
		waitFor(t, func() bool { return shadow.held.Load() == 2 })
		mr := te.live.Load().runtime(0).upstreams["u"].Mirror
		if d := mr.Dropped.Load(); d != 48 {
			t.Fatalf("dropped %d, want 48", d)
		}
		release()
		waitFor(t, func() bool { return mr.Sent.Load() == 2 })
	})
	t.Run("percent", func(t *testing.T) {
		primary := newBackend(t, "primary", "127.0.0.1:0")
		shadow := newBackend(t, "shadow", "127.0.0.1:0")
		te := startEdge(t, mirrorConfig(primary.addr, shadow.addr, "{upstream: shadow, percent: 20}"))
		send(t, te.url+"/", 1000, 4)
		mr := te.live.Load().runtime(0).upstreams["u"].Mirror
		waitFor(t, func() bool { return int64(len(mr.Slots)) == 0 })
		if n := shadow.hits.Load(); n < 130 || n > 270 {
			t.Fatalf("shadow got %d of 1000 at 20%%", n)
		}
	})
	t.Run("a body too large is not copied", func(t *testing.T) {
		primary := newBackend(t, "primary", "127.0.0.1:0")
		shadow := newBackend(t, "shadow", "127.0.0.1:0")
		te := startEdge(t, mirrorConfig(primary.addr, shadow.addr, "{upstream: shadow, max_body: 4}"))
		codes := sendMethod(t, "POST", te.url+"/", "hello", 10, 1)
		if codes[200] != 10 || primary.bodies.Load() != 50 {
			t.Fatalf("statuses %v, primary bytes %d", codes, primary.bodies.Load())
		}
		mr := te.live.Load().runtime(0).upstreams["u"].Mirror
		if mr.Dropped.Load() != 10 || shadow.hits.Load() != 0 {
			t.Fatalf("dropped %d, shadow hits %d", mr.Dropped.Load(), shadow.hits.Load())
		}
	})
}
