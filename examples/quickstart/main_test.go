package main

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testspire"
)

// TestTourCommandsWork runs the quickstart and then every curl command it
// prints, exactly as printed, checking what each is meant to show: with the
// mesh identities from files (the default) and from SPIRE (-identity spire,
// a real spire-server and agents).
func TestTourCommandsWork(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed to run the printed commands: apt-get install -y curl")
	}
	for _, identity := range []string{"files", "spire"} {
		t.Run(identity, func(t *testing.T) {
			if identity == "spire" {
				testspire.Require(t)
			}
			tour(t, identity)
		})
	}
}

func tour(t *testing.T, identity string) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, "127.0.0.1:0", "127.0.0.1:0", identity, pw)
		pw.Close()
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("quickstart: %v", err)
		}
	}()

	var cmds []string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "curl ") || strings.HasPrefix(line, "for ") {
			cmds = append(cmds, line)
		}
		if strings.HasPrefix(line, "Press Ctrl-C") {
			break
		}
	}
	// Keep draining, so the quickstart never blocks on a full pipe.
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if len(cmds) < 7 {
		t.Fatalf("only %d commands printed", len(cmds))
	}
	want := []struct{ contains, shows string }{
		{"/public/hello", `"path": "/hello"`},
		{"/nowhere", `"status":404`},
		{"/partners/orders                 # 401", "HTTP/1.1 401"},
		{"X-API-Key:", `"X-Partner": "acme-corp"`},
		{"/limited", "200 200 200 200 200 429 429"},
		{"/mesh/hello", `"X-Causeway-Peer-Id": "spiffe://quickstart.local/ns/edge/sa/gateway"`},
		{"/mesh/partners/ledger", `"X-Causeway-Caller-Chain": "spiffe://quickstart.local/ns/edge/sa/gateway,spiffe://quickstart.local/ns/demo/sa/demo"`},
		{"/mesh/partners/ledger", `"X-Partner": "acme-corp"`},
		{"/config", `"routes"`},
		{"/metrics", `causeway_requests_total{code="200",method="GET",route="public"} 1`},
	}
	for _, w := range want {
		var cmd string
		for _, c := range cmds {
			if strings.Contains(c, w.contains) {
				cmd = c
				break
			}
		}
		if cmd == "" {
			t.Errorf("no printed command for %q", w.contains)
			continue
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(cctx, "bash", "-c", cmd).CombinedOutput()
		ccancel()
		if err != nil {
			t.Errorf("%s: %v\n%s", cmd, err, out)
			continue
		}
		if !strings.Contains(string(out), w.shows) {
			t.Errorf("%s\nprinted:\n%s\nwant it to show %q", cmd, out, w.shows)
		}
	}
}
