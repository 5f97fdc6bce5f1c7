// Package filewatch follows files that are replaced rather than edited in
// place: the routes file, endpoints files, key files. It watches their
// directories, so a rename by an editor or a Kubernetes ConfigMap or Secret
// volume's ..data swap is seen, and debounces bursts of events into one
// call.
package filewatch

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// File calls reload when the file at path changes, debounced. The
// directory is watched, not the file: editors and Kubernetes ConfigMaps
// replace files by rename, which a watch on the old inode would miss. The
// goroutine is counted in wg and stops when ctx or stop is done.
func File(ctx, stop context.Context, wg *sync.WaitGroup, file string, debounce time.Duration, log *slog.Logger, reload func()) error {
	return Files(ctx, stop, wg, file, func() []string { return nil }, debounce, log, func(bool) { reload() })
}

// Files is File for a main file and the files it refers to
// (API-key files, ...), which every reload may change: extra is asked again
// after each reload. reload learns whether any of the extra files changed,
// since then the main file alone says nothing about whether to rebuild.
func Files(ctx, stop context.Context, wg *sync.WaitGroup, file string, extra func() []string, debounce time.Duration, log *slog.Logger, reload func(extraChanged bool)) error {
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

// watchSet is what a Files goroutine watches; only that goroutine
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
