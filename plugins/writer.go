package plugins

import (
	"bufio"
	"net"
	"net/http"
)

// HookHeader returns a ResponseWriter that calls fn once, just before the
// response header is sent: on the first WriteHeader with a final status
// (informational 1xx responses other than 101 pass through untouched), or
// on the first Write or Flush. fn may change the header; it runs after the
// wrapped handler (e.g. the proxy, which copies the upstream's headers) set
// its own, so a plugin can override or remove what the upstream sent.
//
// Call Done after the wrapped handler returned: a handler that wrote nothing
// gets an implicit 200 from net/http, and Done runs fn for it.
//
// The returned writer supports Flush and Hijack when w does, and Unwrap for
// http.ResponseController.
func HookHeader(w http.ResponseWriter, fn func(status int, h http.Header)) *HeaderHook {
	return &HeaderHook{ResponseWriter: w, fn: fn}
}

// HeaderHook is the ResponseWriter HookHeader returns.
type HeaderHook struct {
	http.ResponseWriter
	fn   func(status int, h http.Header)
	done bool
}

func (h *HeaderHook) WriteHeader(status int) {
	if !h.done && (status >= 200 || status == http.StatusSwitchingProtocols) {
		h.done = true
		h.fn(status, h.ResponseWriter.Header())
	}
	h.ResponseWriter.WriteHeader(status)
}

func (h *HeaderHook) Write(b []byte) (int, error) {
	if !h.done {
		h.WriteHeader(http.StatusOK)
	}
	return h.ResponseWriter.Write(b)
}

// Flush sends the header (running the hook) and flushes.
func (h *HeaderHook) Flush() {
	if !h.done {
		h.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(h.ResponseWriter).Flush()
}

// Hijack hands over the connection; the hook does not run, since no HTTP
// response header will be written through this writer.
func (h *HeaderHook) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h.done = true
	return http.NewResponseController(h.ResponseWriter).Hijack()
}

// Done runs the hook if nothing was written, for the implicit 200 net/http
// sends when the handler returns.
func (h *HeaderHook) Done() {
	if !h.done {
		h.done = true
		h.fn(http.StatusOK, h.ResponseWriter.Header())
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (h *HeaderHook) Unwrap() http.ResponseWriter { return h.ResponseWriter }

var (
	_ http.Flusher  = (*HeaderHook)(nil)
	_ http.Hijacker = (*HeaderHook)(nil)
)
