//go:build unix

package h1server

import (
	"errors"
	"net"
	"syscall"
)

// waitReadable waits until c has bytes to read (or is closed, or its read
// deadline passes) without reading them, so that an idle connection holds
// no buffer. ok is false when c does not expose its socket (then the
// caller reads instead).
func waitReadable(c net.Conn) (ok bool, err error) {
	sc, is := netConn(c).(syscall.Conn)
	if !is {
		return false, nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, nil
	}
	var peekErr error
	err = raw.Read(func(fd uintptr) bool {
		// Peek one byte: data, EOF or an error ends the wait; EAGAIN
		// means nothing yet, and the poller waits for readability. The
		// peek (not a bare wait) is what makes this correct when the
		// bytes arrived before the poller was asked.
		var b [1]byte
		_, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if errors.Is(e, syscall.EAGAIN) || errors.Is(e, syscall.EINTR) {
			return false
		}
		if e != nil && !errors.Is(e, syscall.ENOTSOCK) {
			peekErr = e
		}
		return true
	})
	if err != nil {
		return true, err
	}
	return true, peekErr
}
