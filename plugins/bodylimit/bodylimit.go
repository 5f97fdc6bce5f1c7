// Package bodylimit is the "body_limit" plugin: it refuses request bodies
// larger than a limit with 413, whether the size is declared
// (Content-Length) or only found out while streaming (chunked).
package bodylimit

import (
	"context"
	"errors"

	"io"
	"net/http"
	"sync/atomic"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

func init() { plugins.Register("body_limit", factory) }

// Config is the plugin's config: section.
type Config struct {
	// MaxBytes is the largest request body let through.
	MaxBytes int `yaml:"max_bytes"`
}

// Limit is a configured instance.
type Limit struct {
	max int64
}

var _ plugins.Instance = (*Limit)(nil)

func factory(_ context.Context, raw routes.Raw) (plugins.Instance, error) {
	var cfg Config
	if err := raw.Decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.MaxBytes <= 0 {
		return nil, raw.ErrorAt("max_bytes", "max_bytes is required and must be positive (found %d)", cfg.MaxBytes)
	}
	return New(cfg), nil
}

// New builds an instance; cfg.MaxBytes must be positive.
func New(cfg Config) *Limit { return &Limit{max: int64(cfg.MaxBytes)} }

const tooLarge = "request body too large"

// Wrap refuses oversize bodies.
func (l *Limit) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > l.max {
			// Declared too large: answer before reading a byte, and close
			// the connection rather than drain what the client sends.
			w.Header().Set("Connection", "close")
			plugins.Error(w, r, http.StatusRequestEntityTooLarge, tooLarge)
			return
		}
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength >= 0 {
			// A declared length within the limit is enforced by net/http.
			next.ServeHTTP(w, r)
			return
		}
		body := &limitedBody{rc: r.Body, left: l.max, limit: l.max}
		r = r.Clone(r.Context())
		r.Body = body
		lw := &limitWriter{ResponseWriter: w, body: body, r: r}
		next.ServeHTTP(lw, r)
	})
}

// limitedBody fails reads past the limit with *http.MaxBytesError (which a
// proxy's error handler can also recognise). It is read by the transport's
// goroutine while the handler writes, hence the atomic flag.
type limitedBody struct {
	rc       io.ReadCloser
	left     int64
	limit    int64
	exceeded atomic.Bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.exceeded.Load() {
		return 0, &http.MaxBytesError{Limit: b.limit}
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) > b.left {
		b.exceeded.Store(true)
		n = int(b.left)
		b.left = 0
		return n, &http.MaxBytesError{Limit: b.limit}
	}
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// limitWriter turns whatever the handler answers after the body overflowed
// (typically the proxy's 502 for the failed upload) into 413: the client
// must learn that its body was the problem.
type limitWriter struct {
	http.ResponseWriter
	body     *limitedBody
	r        *http.Request
	replaced bool
	wrote    bool
}

func (w *limitWriter) WriteHeader(status int) {
	if w.wrote || w.replaced {
		return
	}
	if status < 200 {
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.wrote = true
	if w.body.exceeded.Load() {
		w.replaced = true
		h := w.ResponseWriter.Header()
		for k := range h {
			delete(h, k)
		}
		h.Set("Connection", "close")
		plugins.Error(w.ResponseWriter, w.r, http.StatusRequestEntityTooLarge, tooLarge)
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		// Swallowed: the client already has its 413.
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

func (w *limitWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if !w.replaced {
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
}

func (w *limitWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// IsTooLarge reports whether err comes from a body this plugin cut off.
func IsTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}
