package admin

import (
	"net/http"
	"time"
)

// stallChunk is the most one write to the connection carries before the
// deadline moves again: a large answer written in one call (an indented
// /config) must be bounded by its progress, not by its size, so a slow
// but reading client is never cut.
const stallChunk = 32 << 10

// BoundWriteStall gives every write of an admin answer stall to make
// progress. A client that stops reading a large answer (/metrics of many
// upstreams, /config, a trace) blocks the server's write once the socket
// buffers are full; the admin listener has no connection cap (it must
// answer when the data listeners are full), so each such client would hold
// a descriptor and a goroutine for as long as it liked. With the deadline
// the blocked write fails, and net/http closes the connection.
//
// A plain http.Server.WriteTimeout would not do: it bounds the whole
// answer from the end of the request head, so it cuts a slow but reading
// client of a large answer, and every answer that takes long to make (a
// CPU profile or a trace asks for seconds=N; net/http's pprof extends the
// deadline for those two, nothing else does). Here the deadline only runs
// while a write waits: a 30 s profile that writes nothing for 30 s and
// then its result is served whole, and so is a large answer to a client
// that keeps reading.
//
// stall <= 0 leaves next as it is.
func BoundWriteStall(next http.Handler, stall time.Duration) http.Handler {
	if stall <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &stallWriter{ResponseWriter: w, rc: http.NewResponseController(w), stall: stall}
		// Anything the server writes for the handler before its first
		// write (an interim answer) is bounded too.
		sw.arm()
		// What the server writes after the handler returns (the buffered
		// end of the answer, the last chunk) gets a full period; net/http
		// clears the deadline once that is written, so a kept connection
		// waits for its next request without it.
		defer sw.arm()
		next.ServeHTTP(sw, r)
	})
}

// stallWriter moves the connection's write deadline before every write
// and flush of the answer.
type stallWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (w *stallWriter) arm() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.stall)) }

func (w *stallWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), stallChunk)
		w.arm()
		m, err := w.ResponseWriter.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// Flush keeps http.Flusher working for the handlers behind the bound.
func (w *stallWriter) Flush() {
	w.arm()
	_ = w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var _ http.Flusher = (*stallWriter)(nil)
