package filewatch

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// replace writes content beside path and renames it over path, as editors
// and ConfigMap volumes do: a watch on the old inode would miss it.
func replace(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type calls struct {
	mu    sync.Mutex
	extra []bool
}

func (c *calls) add(extra bool) { c.mu.Lock(); c.extra = append(c.extra, extra); c.mu.Unlock() }
func (c *calls) get() []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bool(nil), c.extra...)
}

func TestFiles(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	main := filepath.Join(dir, "routes.yaml")
	keys := filepath.Join(other, "keys.txt")
	unrelated := filepath.Join(dir, "notes.txt")
	replace(t, main, "a")
	replace(t, keys, "k")
	var c calls
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	extra := func() []string { return []string{keys} }
	if err := Files(ctx, context.Background(), &wg, main, extra, 50*time.Millisecond, slog.New(slog.DiscardHandler), c.add); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); wg.Wait() }()

	// A burst of replacements is one reload.
	for i := range 5 {
		replace(t, main, string(rune('b'+i)))
	}
	eventually(t, "a reload after the burst", func() bool { return len(c.get()) == 1 })
	time.Sleep(150 * time.Millisecond)
	if got := c.get(); len(got) != 1 || got[0] {
		t.Fatalf("reloads %v, want one for the main file alone", got)
	}

	// A file nobody refers to changes nothing.
	replace(t, unrelated, "x")
	time.Sleep(150 * time.Millisecond)
	if got := c.get(); len(got) != 1 {
		t.Fatalf("a change to an unrelated file reloaded: %v", got)
	}

	// A referenced file in another directory is watched, and said so.
	replace(t, keys, "k2")
	eventually(t, "a reload for the extra file", func() bool { return len(c.get()) == 2 })
	if got := c.get(); !got[1] {
		t.Fatalf("reloads %v: the second should say an extra file changed", got)
	}
}

// A Kubernetes volume swaps its ..data link: every file of the directory
// may have changed at once.
func TestConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "routes.yaml")
	keys := filepath.Join(dir, "keys.txt")
	replace(t, main, "a")
	replace(t, keys, "k")
	var n atomic.Int32
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	extra := func() []string { return []string{keys} }
	if err := Files(ctx, context.Background(), &wg, main, extra, 20*time.Millisecond, slog.New(slog.DiscardHandler), func(bool) { n.Add(1) }); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); wg.Wait() }()
	if err := os.Symlink(dir, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a reload for the ..data swap", func() bool { return n.Load() == 1 })
}

// The goroutine ends with either context, and a missing directory is an
// error at once rather than a watch that never fires.
func TestStopsAndRefuses(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "routes.yaml")
	replace(t, main, "a")
	for _, which := range []string{"ctx", "stop"} {
		t.Run(which, func(t *testing.T) {
			var wg sync.WaitGroup
			ctx, cancel := context.WithCancel(context.Background())
			stop, cancelStop := context.WithCancel(context.Background())
			defer cancel()
			defer cancelStop()
			if err := File(ctx, stop, &wg, main, time.Millisecond, slog.New(slog.DiscardHandler), func() {}); err != nil {
				t.Fatal(err)
			}
			if which == "ctx" {
				cancel()
			} else {
				cancelStop()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the watcher did not stop")
			}
		})
	}
	var wg sync.WaitGroup
	if err := File(context.Background(), context.Background(), &wg, filepath.Join(dir, "nope", "routes.yaml"), time.Millisecond, slog.New(slog.DiscardHandler), func() {}); err == nil {
		t.Fatal("a file in a missing directory was accepted")
	}
}
