package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/admin"
	"github.com/causewayhq/causeway/routes"
)

// notifyHUP delivers SIGHUP, the conventional "reload" signal.
func notifyHUP() chan os.Signal {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup
}

func stopHUP(c chan os.Signal) { signal.Stop(c) }

// shutdownServers stops the data servers gracefully (in-flight requests get
// until timeout), then the admin server. serving is done when every Serve
// call has returned: a connection Serve accepted just as Shutdown closed the
// listener is only tracked once Serve loops again, so a first Shutdown can
// miss it; the second, after serving is done, waits for it too.
//
// The start and the end of the drain are logged, so that an operator can
// tell a slow drain from a hung process and see whether requests were cut.
func shutdownServers(log *slog.Logger, servers []httpServer, serving *sync.WaitGroup, admin *http.Server, timeout time.Duration) {
	start := time.Now()
	log.Info("shutting down: listeners closed, draining in-flight requests", "timeout", timeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var cut atomic.Bool
	shutdown := func() {
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Shutdown(ctx); err != nil {
					if !cut.Swap(true) {
						log.Warn("in-flight requests cut at the shutdown deadline", "timeout", timeout.String())
					}
					_ = s.Close()
				}
			}()
		}
		wg.Wait()
	}
	defer func() {
		log.Info("shutdown complete", "drained", !cut.Load(), "took", time.Since(start).Round(time.Millisecond).String())
	}()
	shutdown()
	if serving != nil {
		done := make(chan struct{})
		go func() { serving.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	shutdown()
	if admin != nil {
		actx, acancel := context.WithTimeout(context.Background(), time.Second)
		_ = admin.Shutdown(actx)
		acancel()
	}
}

// bindListeners binds each non-empty address (an empty one gives nil). On
// error the listeners already bound are closed.
func bindListeners(addrs ...string) ([]net.Listener, error) {
	lns := make([]net.Listener, len(addrs))
	for i, addr := range addrs {
		if addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeListeners(lns...)
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		lns[i] = ln
	}
	return lns, nil
}

func closeListeners(lns ...net.Listener) {
	for _, ln := range lns {
		if ln != nil {
			ln.Close()
		}
	}
}

func listenerAddr(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// serveAll starts every server on its listener; errc (buffered for every
// server) receives the errors other than a normal close, and the WaitGroup
// is done when every Serve call has returned.
func serveAll(servers []dataServer, errc chan<- error) *sync.WaitGroup {
	serving := &sync.WaitGroup{}
	for _, d := range servers {
		serving.Add(1)
		go func() {
			defer serving.Done()
			var err error
			if d.tls {
				err = d.srv.ServeTLS(d.ln, "", "")
			} else {
				err = d.srv.Serve(d.ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	return serving
}

// runUntil blocks until ctx ends or a server fails, calling reload on
// SIGHUP. With upgrade set, SIGUSR2 calls it and returns (to drain) when it
// reports that a new process has taken over.
func runUntil(ctx context.Context, errc <-chan error, reload func(), upgrade func() bool) error {
	hup := notifyHUP()
	defer stopHUP(hup)
	var usr2 chan os.Signal
	if upgrade != nil {
		usr2 = notifyUpgrade()
		defer signal.Stop(usr2)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			reload()
		case <-usr2:
			if upgrade() {
				return nil
			}
		case err := <-errc:
			return err
		}
	}
}

// newAdminServer serves an admin handler with its own short timeouts,
// from the server settings the process started with (as the data
// listeners' timeouts, they change at the next start, or at a hand-over
// with SIGUSR2; a reload logs that). No admin endpoint reads a request
// body: one that has not all arrived is answered at once and the
// connection closed after a lingering close (answerWithoutBody), rather
// than read by the server with no deadline before the answer and again
// after it.
//
// A keep-alive connection waiting for its next request is closed after
// idle (server.idle_timeout, as on the data listeners). Go's server waits
// for the next request without any deadline when neither IdleTimeout nor
// ReadTimeout is set, and the admin listener has no connection cap (it
// must answer when the data listeners are full): a client could hold as
// many descriptors and goroutines as it liked by making one request on
// each connection and then saying nothing.
//
// Every write of an answer must make progress within
// server.write_stall_timeout (admin.BoundWriteStall), for the same reason:
// a client that asks for /metrics and never reads it would otherwise hold
// its connection for good. The admin listener is always bounded: with the
// key set to 0 (off for the data listeners, for clients that may pause
// reading a stream) it takes the default, since no admin answer is a
// stream a client may pause.
func newAdminServer(log *slog.Logger, h http.Handler, settings routes.Server) *http.Server {
	var noBody routes.Server // body_read_timeout off: only the lingering close bounds a body
	idle := settings.IdleTimeout.D()
	if idle <= 0 {
		idle = routes.DefaultIdleTimeout
	}
	stall := routes.DefaultWriteStallTimeout
	if d := settings.WriteStallTimeout; d != nil && *d > 0 {
		stall = d.D()
	}
	h = admin.BoundWriteStall(h, stall)
	return &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answerWithoutBody(w, r, &noBody, h)
	}), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: idle,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}
