//go:build !unix

package edgetls

// writable is not checked where access(2) is missing: the cache's first
// write reports the problem instead.
func writable(string) error { return nil }
