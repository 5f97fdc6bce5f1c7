//go:build unix

package h1server

import (
	"errors"
	"syscall"
)

// waitReadable waits until the connection has bytes to read (or is closed,
// or its read deadline passes) without reading them, so that an idle
// connection holds no buffer. ok is false when the connection does not
// expose its socket (then the caller reads instead).
func (c *conn) waitReadable() (ok bool, err error) {
	if c.socket() == nil {
		return false, nil
	}
	sv := c.sv
	sv.peekErr, sv.peekWoken = nil, false
	if err := c.raw.Read(sv.peekFn); err != nil {
		return true, err
	}
	return true, sv.peekErr
}

// socket is the connection's socket (under TLS too), nil when it does not
// expose one.
func (c *conn) socket() syscall.RawConn {
	if c.raw == nil {
		if c.noRaw {
			return nil
		}
		sc, is := netConn(c.netc).(syscall.Conn)
		if !is {
			c.noRaw = true
			return nil
		}
		raw, rawErr := sc.SyscallConn()
		if rawErr != nil {
			c.noRaw = true
			return nil
		}
		c.raw = raw
	}
	return c.raw
}

// peek looks for one byte: data, EOF or an error ends the wait; EAGAIN
// means nothing yet, and the poller waits for readability. The peek (not
// a bare wait) is what makes this correct when the bytes arrived before
// the poller was asked. Once the poller has said the socket is readable
// (the only way peek is called a second time), it is taken at its word:
// the read that follows sees the bytes, the EOF or the error, and a peek
// there would be one more syscall per request.
func (sv *serving) peek(fd uintptr) bool {
	if sv.peekWoken {
		return true
	}
	sv.peekWoken = true
	var b [1]byte
	_, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if errors.Is(e, syscall.EAGAIN) || errors.Is(e, syscall.EINTR) {
		return false
	}
	if e != nil && !errors.Is(e, syscall.ENOTSOCK) {
		sv.peekErr = e
	}
	return true
}
