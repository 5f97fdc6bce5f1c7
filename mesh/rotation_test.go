package mesh_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// TestRotationUnderLoadDropsNothing rotates both sides' leaves many times
// and then the CA itself (new root added to the bundles, leaves reissued by
// the new CA, old root removed) while clients send requests without pause,
// over fresh connections (a handshake per request) and reused HTTP/1.1 and
// HTTP/2 connections. Every request must succeed.
func TestRotationUnderLoadDropsNothing(t *testing.T) {
	oldCA := meshtest.NewCA(t, "example.org")
	newCA := meshtest.NewCA(t, "example.org")
	serverDir, clientDir := t.TempDir(), t.TempDir()
	sf := oldCA.IssueFiles(serverDir, ordersID)
	cf := oldCA.IssueFiles(clientDir, gatewayID)
	server, err := mesh.NewSource(context.Background(), sf.Cert, sf.Key, sf.Bundle, mesh.SourceOptions{Logger: discardSlog()})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client, err := mesh.NewSource(context.Background(), cf.Cert, cf.Key, cf.Bundle, mesh.SourceOptions{Logger: discardSlog()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	addr := serveMesh(t, server, peerEcho(mesh.AuthorizeOnly(mustID(t, gatewayID))))

	var (
		stop     atomic.Bool
		requests atomic.Int64
		// fresh counts requests made on new connections (a handshake each).
		fresh  atomic.Int64
		wg     sync.WaitGroup
		errsMu sync.Mutex
		errs   []error
		// serials the handshaking clients saw from the server, to prove the
		// rotations reached the wire.
		seenMu sync.Mutex
		seen   = map[string]bool{}
	)
	workers := []struct {
		name      string
		h2, reuse bool
	}{
		{"handshake per request", false, false},
		{"handshake per request", false, false},
		{"reused HTTP/1.1", false, true},
		{"reused HTTP/2", true, true},
	}
	for _, w := range workers {
		c := meshClient(t, mesh.ClientConfig(client, mustID(t, ordersID)), w.h2, w.reuse)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				resp, err := c.Get("https://" + addr + "/")
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
					} else if !w.reuse {
						seenMu.Lock()
						seen[resp.TLS.PeerCertificates[0].SerialNumber.String()] = true
						seenMu.Unlock()
					}
				}
				if err != nil {
					errsMu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", w.name, err))
					errsMu.Unlock()
				}
				requests.Add(1)
				if !w.reuse {
					fresh.Add(1)
				}
			}
		}()
	}

	// rotate issues a new leaf into dir and waits until src serves it and a
	// few more requests have gone through.
	rotate := func(ca *meshtest.CA, dir, id string, src *mesh.Source) {
		next := ca.Issue(id)
		next.WriteFiles(t, dir, "svid")
		waitFor(t, "rotation of "+id, func() bool { return serial(src) == next.Leaf.SerialNumber.String() })
		settle(t, &requests, &fresh)
	}
	setBundle := func(pem []byte, roots int) {
		for _, p := range []string{sf.Bundle, cf.Bundle} {
			writeFile(t, p, pem)
		}
		for _, src := range []*mesh.Source{server, client} {
			waitFor(t, "the bundle", func() bool {
				b, err := src.GetX509BundleForTrustDomain(src.ID().TrustDomain())
				return err == nil && len(b.X509Authorities()) == roots
			})
		}
		settle(t, &requests, &fresh)
	}

	for range 25 {
		rotate(oldCA, serverDir, ordersID, server)
		rotate(oldCA, clientDir, gatewayID, client)
	}
	setBundle(append(append([]byte{}, oldCA.BundlePEM()...), newCA.BundlePEM()...), 2)
	rotate(newCA, serverDir, ordersID, server)
	rotate(newCA, clientDir, gatewayID, client)
	setBundle(newCA.BundlePEM(), 1)
	for range 10 {
		rotate(newCA, serverDir, ordersID, server)
		rotate(newCA, clientDir, gatewayID, client)
	}

	stop.Store(true)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	seenMu.Lock()
	defer seenMu.Unlock()
	t.Logf("%d requests, %d distinct server certificates seen on new connections", requests.Load(), len(seen))
	if len(seen) < 25 {
		t.Fatalf("only %d server certificates were seen: the rotations did not reach the handshakes", len(seen))
	}
	if !seen[serial(server)] {
		t.Fatal("the last server certificate was never served")
	}
}

// settle waits until more requests completed, among them handshakes that
// started after the change (two fresh workers: at most two were in flight
// before it), so that every state of a rotation is exercised by traffic.
func settle(t *testing.T, requests, fresh *atomic.Int64) {
	t.Helper()
	n, f := requests.Load(), fresh.Load()
	waitFor(t, "requests to flow", func() bool { return requests.Load() >= n+16 && fresh.Load() >= f+4 })
}
