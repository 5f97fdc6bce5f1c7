package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/causewayhq/causeway/internal/refpool"
	"github.com/causewayhq/causeway/routes"
)

// accessLog writes one JSON line per request. It never sees credentials:
// it logs the path without its query (where tokens and keys travel), no
// request or response headers (Authorization, Cookie, API keys), and the
// principal's name (a JWT subject or an API key's name), not the token.
type accessLog struct {
	output string
	sample float64
	logger *slog.Logger
	closer io.Closer
}

// openAccessLog opens the configured output; "off" gives a nil logger.
func openAccessLog(cfg routes.AccessLog) (*accessLog, error) {
	al := &accessLog{output: cfg.Output, sample: cfg.Sample}
	var w io.Writer
	switch cfg.Output {
	case "off":
		return al, nil
	case "stdout":
		w = os.Stdout
	case "stderr":
		w = os.Stderr
	default:
		f, err := os.OpenFile(cfg.Output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("opening access log: %w", err)
		}
		w, al.closer = f, f
	}
	al.logger = slog.New(slog.NewJSONHandler(&lockedWriter{w: w}, nil))
	return al, nil
}

// lockedWriter serialises writes so concurrent lines never interleave, also
// when two configurations briefly share a file across a reload.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// newAccessLogPool shares an open output between generations: a reload
// that keeps the output keeps the file open (rather than reopening, and
// briefly double-opening, it), and the last generation using it closes it.
func newAccessLogPool() *refpool.Pool[string, *accessLog] {
	return refpool.New[string]((*accessLog).Close)
}

// acquireAccessLog gives g the access log of cfg: the shared output, with
// g's own sampling. A new output is opened now, so a file that cannot be
// opened refuses the configuration; when g is refused and opening created
// the file, undo removes it, so a refused file leaves no trace on disk, and
// neither does a check (Check) of a file that is accepted.
func (s *server[C]) acquireAccessLog(g *generation[C], cfg routes.AccessLog) (*accessLog, error) {
	created := false
	shared, loaded, err := s.logs.Acquire(cfg.Output, func() (*accessLog, error) {
		switch cfg.Output {
		case "off", "stdout", "stderr":
		default:
			// Stat, not Lstat: through a dangling symbolic link opening
			// creates the link's target, which is then what undo removes.
			_, err := os.Stat(cfg.Output)
			created = errors.Is(err, fs.ErrNotExist)
		}
		return openAccessLog(cfg)
	})
	if err != nil {
		return nil, err
	}
	if !loaded && created {
		remove := func() {
			if p, err := filepath.EvalSymlinks(cfg.Output); err == nil {
				_ = os.Remove(p)
			}
		}
		g.onUndo(remove)
		if s.opts.checkOnly {
			// A check (causeway validate) opens the output to find one
			// that cannot be opened, and must not leave what it created:
			// removed once released, after the pool's close below.
			g.onRelease(remove)
		}
	}
	g.onRelease(func() { _, _ = s.logs.Release(cfg.Output) })
	view := *shared
	view.sample = cfg.Sample
	view.closer = nil // the pool closes the output
	return &view, nil
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (al *accessLog) Close() error {
	if al == nil || al.closer == nil {
		return nil
	}
	return al.closer.Close()
}

func (al *accessLog) log(r *http.Request, st *reqState, d time.Duration) {
	if al == nil || al.logger == nil {
		return
	}
	status := st.rec.status
	if status < 500 && al.sample < 1 && rand.Float64() >= al.sample {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("request_id", st.requestID),
		slog.String("trace_id", st.traceID),
		slog.String("route", st.route),
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Int64("bytes_in", st.bodyRead.Load()),
		slog.Int64("bytes_out", st.rec.bytes),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("client_ip", st.clientIP),
	)
	if st.upstream != "" {
		attrs = append(attrs, slog.String("upstream", st.upstream))
	}
	if st.endpoint != nil {
		attrs = append(attrs, slog.String("endpoint", st.endpoint.Addr),
			slog.Float64("upstream_ms", float64(st.upstreamDur.Microseconds())/1000))
	}
	if st.principal != "" {
		attrs = append(attrs, slog.String("principal", st.principal))
	}
	if st.upstreamErr != nil {
		attrs = append(attrs, slog.String("upstream_error", upstreamErrorText(st.upstreamErr)))
	}
	al.logger.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}

// upstreamErrorText is an upstream failure for the log without the URL a
// *url.Error carries: its query could hold a credential.
func upstreamErrorText(err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Op + " upstream: " + uerr.Err.Error()
	}
	return err.Error()
}
