package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Reloads race: SIGHUP (Reload) from two goroutines and the file watch,
// while the file is rewritten between a good file of variant a or c and
// a refused one of variant b (its own certificate and upstream, refused
// by an unknown plugin after every other feature prepared), 200 rounds.
// Once the round settles, the certificate presented and the upstream a
// request reaches are of one variant (never the certificate of one file
// and the routes of another), that of the file on disk when it is good,
// and never b. Every Reload is counted once in config_reloads_total with
// its own outcome. No defect found.
func TestRacingReloadsEndOnOneWholeGeneration(t *testing.T) {
	variants := []string{"a", "b", "c"}
	ups, serials, files := map[string]string{}, map[string]string{}, map[string]string{}
	for _, v := range variants {
		ups[v] = hostPort(echoUpstream(t, v))
		c, _, _ := selfSigned(t, t.TempDir(), "api.example.com")
		serials[v] = leafSerial(t, c)
		files[v] = fmt.Sprintf("version: 1\nlisten: {https: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: off}\n"+
			"tls:\n  certificates: [{cert_file: %q, key_file: %q}]\n"+
			"upstreams:\n  up: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n",
			c, strings.TrimSuffix(c, "cert.pem")+"key.pem", ups[v])
	}
	files["b"] += "plugins:\n  broken: {use: no-such-plugin}\n"
	te := startEdge(t, files["a"])
	client := func() *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "api.example.com", InsecureSkipVerify: true}, DisableKeepAlives: true}}
	}()
	defer client.CloseIdleConnections()
	// probe reads the certificate and the upstream over one connection.
	probe := func() (cert, upstream string) {
		resp, err := client.Get("https://" + te.Addr("https") + "/")
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := resp.TLS.PeerCertificates[0].SerialNumber.String()
		for v, s := range serials {
			if s == got {
				cert = v
			}
		}
		return cert, decodeEcho(t, body).Upstream
	}
	reloads := func(result string) float64 {
		return counterValue(t, te.metrics.reloads.WithLabelValues(result))
	}
	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	var okCalls, refusedCalls int
	for round := range rounds {
		good := []string{"a", "c"}[round%2]
		// The order the two writers reach the file in decides what it
		// holds at the end; both reload at once, and the watch fires on
		// each write.
		order := []string{good, "b"}
		if round%3 == 0 {
			order = []string{"b", good}
		}
		okBefore, failBefore := reloads("success"), reloads("failure")
		var wg sync.WaitGroup
		var mu sync.Mutex
		var last string
		results := make([]error, 2)
		for i, v := range order {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mu.Lock()
				writeFile(t, te.path, files[v]+"# round "+strconv.Itoa(round)+"\n")
				last = v
				mu.Unlock()
				results[i] = te.Reload(context.Background())
			}()
		}
		wg.Wait()
		for _, err := range results {
			if err == nil {
				okCalls++
			} else {
				refusedCalls++
			}
		}
		// Settle: the watch may still load the last write.
		deadline := time.Now().Add(5 * time.Second)
		var cert, upstream string
		for {
			cert, upstream = probe()
			whole := cert == upstream && cert != "b"
			if whole && (last == "b" || cert == last) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d (file holds %s): certificate of %q, upstream %q", round, last, cert, upstream)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// Each Reload built once and counted its own outcome; the watch
		// may have added builds of its own.
		if okDelta, failDelta := reloads("success")-okBefore, reloads("failure")-failBefore; okDelta < float64(countNil(results)) || failDelta < float64(2-countNil(results)) {
			t.Fatalf("round %d: reloads counted success +%v failure +%v for Reload results %v", round, okDelta, failDelta, results)
		}
	}
	if refusedCalls == 0 || okCalls == 0 {
		t.Fatalf("the race never mixed outcomes: %d accepted, %d refused", okCalls, refusedCalls)
	}
	t.Logf("%d rounds: %d reloads accepted, %d refused", rounds, okCalls, refusedCalls)
}

func countNil(errs []error) int {
	n := 0
	for _, err := range errs {
		if err == nil {
			n++
		}
	}
	return n
}
