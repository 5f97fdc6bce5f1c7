package gateway

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// pair is a certificate for host with the given serial, from ca, as a
// route source hands it to the edge.
func pair(t *testing.T, ca *testutil.CA, host string, serial int64) routes.InlineCertificate {
	t.Helper()
	certPEM, keyPEM := ca.Leaf(t, host, serial)
	return routes.InlineCertificate{Source: fmt.Sprintf("Secret churn/%d", serial), CertPEM: certPEM, KeyPEM: keyPEM}
}

// A route source's certificates churn under TLS clients: good sets
// interleaved with sets the edge must refuse (a key of another
// certificate). Every handshake, on fresh connections from 8 clients
// throughout, verifies against the CA and gets a certificate applied while
// it ran, never one of a refused set, and every request through it
// reaches the upstream: a refused model never swaps a certificate and a
// swap never drops a handshake.
func TestProviderCertificateChurn(t *testing.T) {
	up := echoUpstream(t, "k8s")
	file := `version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: off}
tls: {redirect_http: false}
providers:
  kubernetes: {kubeconfig: ""}
`
	te, src := startFedEdge(t, file)
	httpsAddr := te.Addr("https")
	ca := testutil.NewCA(t)
	frag := func(certs ...routes.InlineCertificate) routes.Fragment {
		return routes.Fragment{
			Upstreams:    map[string]routes.Upstream{"k8s.churn.web.80": {Endpoints: []string{hostPort(up)}}},
			Routes:       []routes.Route{{Name: "k8s.churn.r", Match: routes.Match{Host: "churn.example", PathPrefix: "/"}, Upstream: "k8s.churn.web.80"}},
			Certificates: certs,
		}
	}
	if err := src.send(t, frag(pair(t, ca, "churn.example", 100))); err != nil {
		t.Fatal(err)
	}

	// live is the serial of the last set applied; next is the one being
	// applied, which handshakes may see from its commit on, before the
	// apply returns.
	var live, next atomic.Int64
	live.Store(100)
	next.Store(100)
	var handshakes, failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				before := live.Load()
				tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "churn.example", RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}}
				req, _ := http.NewRequest(http.MethodGet, "https://"+httpsAddr+"/x", nil)
				req.Host = "churn.example"
				resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
				after := next.Load()
				if err != nil {
					failures.Add(1)
					select {
					case errs <- err.Error():
					default:
					}
					tr.CloseIdleConnections()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				tr.CloseIdleConnections()
				handshakes.Add(1)
				got := resp.TLS.PeerCertificates[0].SerialNumber.Int64()
				if got < before || got > after || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"Upstream":"k8s"`) {
					failures.Add(1)
					select {
					case errs <- fmt.Sprintf("serial %d (live %d..%d), %d %s", got, before, after, resp.StatusCode, body):
					default:
					}
				}
			}
		}()
	}
	// Swaps and refusals go on until the clients have made 1,000
	// handshakes (a one-in-a-thousand race has its chance), at most 300.
	swaps := int64(0)
	for i := int64(1); i <= 300 && (handshakes.Load() < 1000 || i <= 30); i++ {
		swaps = i
		good := pair(t, ca, "churn.example", 100+i)
		next.Store(100 + i)
		if err := src.send(t, frag(good)); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
		live.Store(100 + i)
		// Refused sets: a pair with another certificate's key, or a good
		// pair in a model refused after every feature prepared (an
		// upstream whose mesh identity does not parse, found when the
		// runtime is built), whose certificate must not be served either.
		refused := frag(pair(t, ca, "churn.example", 9000+i))
		if i%2 == 0 {
			refused.Certificates[0].KeyPEM = pair(t, ca, "churn.example", 9500+i).KeyPEM
		} else {
			refused.Upstreams["k8s.churn.late.80"] = routes.Upstream{EndpointsFile: "/nonexistent/endpoints"}
		}
		if err := src.send(t, refused); err == nil {
			t.Fatalf("apply %d: a set the edge must refuse was accepted", i)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := handshakes.Load(); n < 300 || failures.Load() != 0 {
		t.Fatalf("%d handshakes, %d failures", n, failures.Load())
	}
	t.Logf("%d handshakes over %d swaps and as many refusals", handshakes.Load(), swaps)
}
