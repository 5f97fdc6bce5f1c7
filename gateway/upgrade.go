package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Zero-downtime binary upgrade. On SIGUSR2 the running edge (or sidecar) starts a new
// copy of its binary (same arguments) and hands it its listening sockets as
// inherited file descriptors. Both processes accept from the same sockets
// while the new one starts, so no connection is refused or reset; once the
// new process says it is ready, the old one stops accepting and drains its
// in-flight requests like on SIGTERM. Replace the binary on disk first, then
// send SIGUSR2.

// inheritEnv names the inherited descriptors: "http=3,https=4,admin=5,ready=6".
const inheritEnv = "CAUSEWAY_INHERIT_FDS"

// Inherited holds what a process started by an upgrade received.
type Inherited struct {
	Listeners map[string]net.Listener // by name: http, https, admin
	ready     *os.File
}

// InheritedFromEnv takes over the listeners an upgrading parent passed down,
// if any (nil when the process was started normally).
func InheritedFromEnv() (*Inherited, error) {
	spec := os.Getenv(inheritEnv)
	if spec == "" {
		return nil, nil
	}
	os.Unsetenv(inheritEnv) // not for the next upgrade's children
	in := &Inherited{Listeners: map[string]net.Listener{}}
	for _, part := range strings.Split(spec, ",") {
		name, fdStr, ok := strings.Cut(part, "=")
		fd, err := strconv.Atoi(fdStr)
		if !ok || err != nil || fd < 3 {
			return nil, fmt.Errorf("upgrade: bad %s entry %q", inheritEnv, part)
		}
		f := os.NewFile(uintptr(fd), name)
		if name == "ready" {
			in.ready = f
			continue
		}
		ln, err := net.FileListener(f)
		f.Close() // FileListener dup'ed it
		if err != nil {
			return nil, fmt.Errorf("upgrade: inheriting the %s listener: %w", name, err)
		}
		in.Listeners[name] = ln
	}
	return in, nil
}

// signalReady tells the parent this process serves; the parent then drains.
func (in *Inherited) signalReady() {
	if in == nil || in.ready == nil {
		return
	}
	fmt.Fprintf(in.ready, "ready %d\n", os.Getpid())
	in.ready.Close()
	in.ready = nil
}

// namedListener is a listener an upgrade hands down, under its name.
type namedListener struct {
	name string
	ln   net.Listener
}

// upgradeOnSignal is runUntil's SIGUSR2 hook: it starts the new process
// with lns and reports (and records in upgraded) whether it took over. On
// error the new process is stopped and this one keeps serving.
func upgradeOnSignal(log *slog.Logger, upgraded *bool, lns ...namedListener) func() bool {
	return func() bool {
		if err := startUpgrade(log, lns); err != nil {
			log.Error("upgrade failed; this process keeps serving", "error", err.Error())
			return false
		}
		*upgraded = true
		return true
	}
}

// startUpgrade starts a new copy of this binary (same arguments) with the
// listeners, and waits until it says it serves.
func startUpgrade(log *slog.Logger, listeners []namedListener) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("upgrade: finding the binary: %w", err)
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var spec []string
	for _, l := range listeners {
		tl, ok := l.ln.(*net.TCPListener)
		if !ok {
			continue
		}
		f, err := tl.File()
		if err != nil {
			return fmt.Errorf("upgrade: passing the %s listener: %w", l.name, err)
		}
		files = append(files, f)
		spec = append(spec, fmt.Sprintf("%s=%d", l.name, 2+len(files)))
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	files = append(files, w)
	spec = append(spec, fmt.Sprintf("ready=%d", 2+len(files)))

	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), inheritEnv+"="+strings.Join(spec, ","))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("upgrade: starting %s: %w", exe, err)
	}
	w.Close() // the child holds its copy; EOF on r if it dies
	files = files[:len(files)-1]

	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		ready <- strings.TrimSpace(line)
	}()
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, "ready ") {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return errors.New("upgrade: the new process exited before it was ready")
		}
		log.Info("upgrade: the new process serves; draining this one", "new_pid", strings.TrimPrefix(line, "ready "))
		// The new process is not our child to wait for once we exit; release it.
		_ = cmd.Process.Release()
		return nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return errors.New("upgrade: the new process was not ready within 30s")
	}
}

// take returns the inherited listeners by name, or an error naming the
// first configured address (addrs[i] non-empty) that has none.
func (in *Inherited) take(names, addrs []string) ([]net.Listener, error) {
	lns := make([]net.Listener, len(names))
	for i, name := range names {
		lns[i] = in.Listeners[name]
		if lns[i] == nil && addrs[i] != "" {
			closeListeners(lns...)
			return nil, fmt.Errorf("upgrade: no inherited listener for %s", addrs[i])
		}
	}
	return lns, nil
}

// notifyUpgrade delivers SIGUSR2, the upgrade signal.
func notifyUpgrade() chan os.Signal {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR2)
	return c
}
