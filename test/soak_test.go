package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// TestSoak drives the full pipeline — TLS at the edge, RS256 JWT, a Redis
// rate limit that allows everything, mTLS to a sidecar, the service — at a
// steady concurrency, and reports requests, errors (must be zero), p99, and
// memory and goroutines at start and end. `make test` runs it for 5 s;
// `make soak` (CAUSEWAY_SOAK=1) for 5 minutes, or CAUSEWAY_SOAK_DURATION.
func TestSoak(t *testing.T) {
	duration := 5 * time.Second
	if os.Getenv("CAUSEWAY_SOAK") != "" {
		duration = 5 * time.Minute
	}
	if d, err := time.ParseDuration(os.Getenv("CAUSEWAY_SOAK_DURATION")); err == nil {
		duration = d
	}
	const workers = 16
	pl := newPipeline(t, stages{tls: true, jwt: true, redis: true, mesh: true}, workers)
	do := pl.do
	var total, failed atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, workers)
	load := func(d time.Duration, record bool) {
		ctx, stop := context.WithTimeout(context.Background(), d)
		defer stop()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					start := time.Now()
					err := do()
					if !record {
						continue
					}
					total.Add(1)
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					if len(lat[w]) < 1_000_000 {
						lat[w] = append(lat[w], time.Since(start))
					}
				}
			}()
		}
		wg.Wait()
	}
	// Warm up at the same concurrency, so connection pools have their
	// working size before the start figures are taken.
	load(time.Second, false)
	runtime.GC()
	rssStart, gStart := rssKiB(), runtime.NumGoroutine()
	load(duration, true)
	// Let connections the load left idle reach their timeouts and close.
	var gEnd int
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		gEnd = runtime.NumGoroutine()
		if gEnd <= gStart+4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	rssEnd := rssKiB()

	all := slices.Concat(lat...)
	slices.Sort(all)
	p := func(q float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[int(q*float64(len(all)-1))]
	}
	t.Logf("soak %s, %d workers: %d requests (%.0f/s), %d errors, p50 %s, p99 %s; RSS %d -> %d KiB; goroutines %d -> %d",
		duration, workers, total.Load(), float64(total.Load())/duration.Seconds(), failed.Load(), p(0.50), p(0.99), rssStart, rssEnd, gStart, gEnd)
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed; first: %v", failed.Load(), total.Load(), firstErr.Load())
	}
	if total.Load() == 0 {
		t.Error("no request completed")
	}
	if gEnd > gStart+4 {
		t.Errorf("goroutines grew from %d to %d", gStart, gEnd)
	}
}

func writeConfig(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// rssKiB is this process's resident set (edge, sidecar, service and client
// together: they share the process in this test).
func rssKiB() int {
	n, err := testutil.ProcStatusKB(0, "VmRSS:")
	if err != nil {
		return -1
	}
	return int(n)
}

func rsaKey(t testing.TB, dir string) (*rsa.PrivateKey, string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "jwt.pub.pem")
	writeConfig(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	return key, path
}

func serverCert(t testing.TB, dir, name string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls-key.pem")
	writeConfig(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeConfig(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})))
	leaf, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(leaf)
	return certFile, keyFile, pool
}
