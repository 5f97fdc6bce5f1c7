package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchFile calls reload when the file at path changes, debounced. The
// directory is watched, not the file: editors and Kubernetes ConfigMaps
// replace files by rename, which a watch on the old inode would miss. The
// goroutine is counted in wg and stops when ctx or stop is done.
func watchFile(ctx, stop context.Context, wg *sync.WaitGroup, file string, debounce time.Duration, log *slog.Logger, reload func()) error {
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
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer w.Close()
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		defer timer.Stop()
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
				if ev.Name != path && filepath.Base(ev.Name) != "..data" {
					continue
				}
				timer.Reset(debounce)
			case <-timer.C:
				reload()
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

// notifyHUP delivers SIGHUP, the conventional "reload" signal.
func notifyHUP() chan os.Signal {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup
}

func stopHUP(c chan os.Signal) { signal.Stop(c) }

// shutdownServers stops the data servers gracefully (in-flight requests get
// until timeout), then the admin server.
func shutdownServers(log *slog.Logger, servers []*http.Server, admin *http.Server, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Shutdown(ctx); err != nil {
				log.Warn("in-flight requests cut at the shutdown deadline", "timeout", timeout)
				_ = s.Close()
			}
		}()
	}
	wg.Wait()
	if admin != nil {
		actx, acancel := context.WithTimeout(context.Background(), time.Second)
		_ = admin.Shutdown(actx)
		acancel()
	}
}
