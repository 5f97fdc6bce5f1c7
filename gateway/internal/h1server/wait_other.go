//go:build !unix

package h1server

func (c *conn) waitReadable() (bool, error) { return false, nil }
