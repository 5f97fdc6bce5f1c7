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
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchFile calls reload when the file at path changes, debounced. The
// directory is watched, not the file: editors and Kubernetes ConfigMaps
// replace files by rename, which a watch on the old inode would miss. The
// goroutine is counted in wg and stops when ctx or stop is done.
func watchFile(ctx, stop context.Context, wg *sync.WaitGroup, file string, debounce time.Duration, log *slog.Logger, reload func()) error {
	return watchFiles(ctx, stop, wg, file, func() []string { return nil }, debounce, log, func(bool) { reload() })
}

// watchFiles is watchFile for a main file and the files it refers to
// (API-key files, ...), which every reload may change: extra is asked again
// after each reload. reload learns whether any of the extra files changed,
// since then the main file alone says nothing about whether to rebuild.
func watchFiles(ctx, stop context.Context, wg *sync.WaitGroup, file string, extra func() []string, debounce time.Duration, log *slog.Logger, reload func(extraChanged bool)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	path, err := filepath.Abs(file)
	if err != nil {
		w.Close()
		return err
	}
	if err := w.Add(filepath.Dir(path)); err != nil {
		w.Close()
		return err
	}
	ws := &watchSet{w: w, main: path, log: log, dirs: map[string]bool{filepath.Dir(path): true}}
	ws.update(extra())
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer w.Close()
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		defer timer.Stop()
		extraChanged := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-stop.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				mine, other := ws.match(ev.Name)
				if !mine && !other {
					continue
				}
				extraChanged = extraChanged || other
				timer.Reset(debounce)
			case <-timer.C:
				reload(extraChanged)
				extraChanged = false
				ws.update(extra())
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("watching a configuration file", "file", path, "error", err.Error())
			}
		}
	}()
	return nil
}

// watchSet is what a watchFiles goroutine watches; only that goroutine
// uses it.
type watchSet struct {
	w     *fsnotify.Watcher
	main  string
	log   *slog.Logger
	extra map[string]bool // absolute paths
	dirs  map[string]bool // watched directories
}

// update watches the directories of files, and stops watching those no
// longer needed (the main file's stays).
func (ws *watchSet) update(files []string) {
	ws.extra = make(map[string]bool, len(files))
	want := map[string]bool{filepath.Dir(ws.main): true}
	for _, f := range files {
		abs, err := filepath.Abs(f)
		if err != nil {
			continue
		}
		ws.extra[abs] = true
		want[filepath.Dir(abs)] = true
	}
	for d := range want {
		if ws.dirs[d] {
			continue
		}
		if err := ws.w.Add(d); err != nil {
			// The file's own load reports a missing directory; until
			// then edits there need a SIGHUP.
			ws.log.Warn("cannot watch a referenced file's directory; edits there need a reload (SIGHUP)", "dir", d, "error", err.Error())
			continue
		}
		ws.dirs[d] = true
	}
	for d := range ws.dirs {
		if !want[d] {
			_ = ws.w.Remove(d)
			delete(ws.dirs, d)
		}
	}
}

// match says whether an event on name concerns the main file or one of
// the extra files. A Kubernetes ConfigMap or Secret volume swaps its
// "..data" link, which may change every file of that directory.
func (ws *watchSet) match(name string) (main, extra bool) {
	if name == ws.main {
		return true, false
	}
	if ws.extra[name] {
		return false, true
	}
	if filepath.Base(name) != "..data" {
		return false, false
	}
	dir := filepath.Dir(name)
	main = dir == filepath.Dir(ws.main)
	for f := range ws.extra {
		if filepath.Dir(f) == dir {
			extra = true
		}
	}
	return main, extra
}

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
func shutdownServers(log *slog.Logger, servers []*http.Server, serving *sync.WaitGroup, admin *http.Server, timeout time.Duration) {
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

// newAdminServer serves an admin handler with its own short timeouts.
func newAdminServer(log *slog.Logger, h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}
