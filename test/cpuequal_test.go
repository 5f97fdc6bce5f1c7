//go:build linux

package test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// TestSidecarCPUAtEqualLoad puts the same load on a plain edge and on a
// sidecar's inbound side (mTLS from the edge's identity), each driven
// directly by the test's clients, and logs each one's CPU per request at
// several client counts. TestPipelineCPUBudget compares the sidecar, run
// at the pace of the edge in front of it, with a plain edge run flat out;
// a Go server's CPU per request grows as its load falls (more of its
// requests wake an idle thread), so that ratio mixes what the sidecar does
// with how busy it is. Here both see the same clients. Only with
// CAUSEWAY_CPU_BUDGET=1: it measures and asserts only that every request
// is answered.
func TestSidecarCPUAtEqualLoad(t *testing.T) {
	if os.Getenv("CAUSEWAY_CPU_BUDGET") != "1" {
		t.Skip("a measurement: set CAUSEWAY_CPU_BUDGET=1")
	}
	const requests, rounds = 20_000, 3
	dir := t.TempDir()
	bin := buildCauseway(t, dir)
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer svc.Close()
	svcAddr := strings.TrimPrefix(svc.URL, "http://")
	ca := meshtest.NewCA(t, "example.org")
	src, _ := ca.Source("spiffe://example.org/ns/edge/sa/gateway")
	defer src.Close()
	svcFiles := ca.IssueFiles(t.TempDir(), "spiffe://example.org/ns/shop/sa/orders")
	inbound := freeTCPAddr(t)
	sidecar := startBudgetProcess(t, bin, filepath.Join(dir, "sidecar"), "sidecar", false, fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q}
access_log: {output: "off"}
admin: %%q
inbound: {listen: %q, forward_to: %q, allow: ["spiffe://example.org/ns/edge/sa/gateway"]}
`, svcFiles.Cert, svcFiles.Key, svcFiles.Bundle, inbound, svcAddr))
	edge := startBudgetProcess(t, bin, filepath.Join(dir, "edge"), "edge", false, fmt.Sprintf(
		"version: 1\naccess_log: {output: \"off\"}\nlisten: {http: %%q, admin: %%q}\nupstreams:\n  orders: {endpoints: [%q]}\nroutes:\n  - {name: orders, match: {path_prefix: /orders}, upstream: orders}\n", svcAddr))
	want, err := mesh.ParseID("spiffe://example.org/ns/shop/sa/orders")
	if err != nil {
		t.Fatal(err)
	}
	mtls := mesh.ClientConfig(src, want)
	mtls.NextProtos = []string{"http/1.1"}

	targets := []struct {
		name string
		proc *budgetProcess
		url  string
		tr   func(conns int) *http.Transport
	}{
		{"plain edge", edge, "http://" + edge.addr + "/orders/1", func(n int) *http.Transport { return &http.Transport{MaxIdleConnsPerHost: n} }},
		{"sidecar (mTLS)", sidecar, "https://" + inbound + "/orders/1", func(n int) *http.Transport {
			return &http.Transport{MaxIdleConnsPerHost: n, TLSClientConfig: mtls}
		}},
	}
	clients := []int{16, 4, 1}
	cpu := map[string][]float64{} // "target/clients" -> µs per request, one per round
	for round := range rounds {
		for _, conns := range clients {
			for _, tg := range targets {
				client := &http.Client{Transport: tg.tr(conns)}
				call := func(string) (*http.Response, []byte, error) {
					resp, err := client.Get(tg.url)
					if err != nil {
						return nil, nil, err
					}
					defer resp.Body.Close()
					b, err := io.ReadAll(resp.Body)
					return resp, b, err
				}
				if err := budgetLoad(conns, conns*8, call, "", false); err != nil {
					t.Fatalf("%s, warm-up: %v", tg.name, err)
				}
				c0 := procCPUTime(t, tg.proc.pid())
				err := budgetLoad(conns, requests, call, "", false)
				c1 := procCPUTime(t, tg.proc.pid())
				client.CloseIdleConnections()
				if err != nil {
					t.Fatalf("%s, round %d: %v", tg.name, round+1, err)
				}
				k := fmt.Sprintf("%s/%d", tg.name, conns)
				cpu[k] = append(cpu[k], float64((c1-c0).Microseconds())/requests)
			}
		}
	}
	median := func(xs []float64) float64 {
		xs = slices.Clone(xs)
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CPU per request, medians of %d rounds of %d requests (64-byte answers):\n", rounds, requests)
	b.WriteString("| keep-alive clients | plain edge µs/req | sidecar µs/req | sidecar ÷ edge | edge ÷ edge at 16 clients |\n|--:|--:|--:|--:|--:|\n")
	top := median(cpu[fmt.Sprintf("plain edge/%d", clients[0])])
	for _, n := range clients {
		e, s := median(cpu[fmt.Sprintf("plain edge/%d", n)]), median(cpu[fmt.Sprintf("sidecar (mTLS)/%d", n)])
		fmt.Fprintf(&b, "| %d | %.1f | %.1f | %.2f | %.2f |\n", n, e, s, s/e, e/top)
	}
	t.Log("\n" + b.String())
}
