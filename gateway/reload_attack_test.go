package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// 300 generations swapped under POST load, about half of the reloads changing the
// upstream's connection settings (a new pool from the pool registry, the
// old one closed when its last generation retires), some refused: every
// body arrives whole at the upstream (it answers with the SHA-256 of what
// it read), no request fails, and once the old generations have retired
// the registry holds exactly the live generation's pool, nothing leaked and
// nothing closed under a generation still using it.
func TestReloadAttackPoolsAndBodies(t *testing.T) {
	var received atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		received.Add(n)
		_, _ = io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
	}))
	defer up.Close()
	cfg := func(i int) string {
		// timeout is part of the pool's key: odd generations need a new pool.
		return listenHeader + fmt.Sprintf("upstreams:\n  u: {endpoints: [%q], timeout: %ds}\nroutes:\n  - {name: r%d, match: {path_prefix: /}, upstream: u}\n", hostPort(up), 30+i%2, i)
	}
	te := startEdge(t, cfg(0))

	ctx, stop := context.WithCancel(context.Background())
	var ok, failed, sent atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for ctx.Err() == nil {
				body := make([]byte, rng.IntN(64<<10))
				for i := range body {
					body[i] = byte(rng.Uint32())
				}
				sum := sha256.Sum256(body)
				resp, err := client.Post(te.url+"/", "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { t.Logf("first failure: %v", err) })
					continue
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(got) != hex.EncodeToString(sum[:]) {
					failed.Add(1)
					firstErr.Do(func() { t.Logf("first failure: %d %q", resp.StatusCode, got) })
					continue
				}
				sent.Add(int64(len(body)))
				ok.Add(1)
			}
		}()
	}
	for i := 1; i <= 300; i++ {
		if i%5 == 0 {
			// A refused file: nothing of it may touch the pools in use.
			writeFile(t, te.path, cfg(i)+"  - {name: bad, match: {path_prefix: /x}, upstream: missing}\n")
			if err := te.Reload(context.Background()); err == nil {
				t.Fatal("a file with an undefined upstream was accepted")
			}
			continue
		}
		writeFile(t, te.path, cfg(i))
		if err := te.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d requests failed, %d succeeded", failed.Load(), ok.Load())
	}
	if received.Load() != sent.Load() {
		t.Fatalf("the upstream read %d body bytes, the clients sent %d in answered requests", received.Load(), sent.Load())
	}
	// With no request in flight, every replaced generation retires: the
	// registry ends with the live pool alone, held once. Both are waited
	// for: the handler of the last answered request (and so its
	// generation) ends a moment after the client has read the answer, and
	// a generation that shared the live pool's key still holds it until
	// then.
	live := te.live.Load().runtime(0).upstreams["u"].Pool.Key
	deadline := time.Now().Add(10 * time.Second)
	for te.pools.Len() != 1 || te.pools.References(live) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the last request the registry holds %d pools, the live one %d references; want 1 and 1 (its generation's)", te.pools.Len(), te.pools.References(live))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d POSTs (%d body bytes) across 300 reloads (60 refused; a new pool whenever the timeout flips), none failed or cut", ok.Load(), sent.Load())
}
