package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// An edge whose listeners cannot all be bound (the admin address is taken)
// returns the error from Serve and leaves nothing running: not the
// listeners it did bind, not the goroutines its configuration started
// (the certificate watcher, health checks).
func TestServeThatCannotBindLeavesNothingRunning(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	before := goleak.IgnoreCurrent()
	dir := t.TempDir()
	cert, key, _ := selfSigned(t, dir, "api.example.com")
	path := filepath.Join(dir, "c.yaml")
	writeFile(t, path, fmt.Sprintf("version: 1\nlisten: {http: \"127.0.0.1:0\", https: \"127.0.0.1:0\", admin: %q}\naccess_log: {output: off}\n", busy.Addr().String())+
		fmt.Sprintf("tls:\n  certificates: [{cert_file: %q, key_file: %q}]\n", cert, key)+
		"upstreams:\n  up: {endpoints: [\"127.0.0.1:9\"], health_check: {path: /h, interval: 1h, timeout: 1s}}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n")
	e, err := NewEdge(context.Background(), EdgeOptions{ConfigPath: path, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	err = e.Serve(context.Background())
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("Serve: %v, want the bind error", err)
	}
	goleak.VerifyNone(t, before, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}
