//go:build !unix

package h1server

import "syscall"

func (c *conn) waitReadable() (bool, error) { return false, nil }

func (c *conn) socket() syscall.RawConn { return nil }

func (sv *serving) peek(uintptr) bool { return true }
