package gateway

import (
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// outboundCall sends one request from the calling service (the test) to
// the service named host through the sidecar's outbound listener at out.
func outboundCall(c *http.Client, out, host, method, path string, body io.Reader, hdr http.Header) (int, string, error) {
	req, err := http.NewRequest(method, "http://"+out+path, body)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	for k, vv := range hdr {
		req.Header[k] = vv
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Grpc-Status") == "14" {
		// A gRPC call's 502 (trailers-only UNAVAILABLE, httperr.GRPCCode).
		return http.StatusBadGateway, string(b), err
	}
	return resp.StatusCode, string(b), err
}

// The remote sidecar's root leaves the calling sidecar's bundle while the
// calling sidecar holds a pooled mTLS connection to it (made when the root
// was trusted). Removing a root is how a compromised CA is cut off; the
// inbound side already checks its callers' chains again on open
// connections (TestSidecarRefusesCallerNoLongerValidOnOpenConnection). The
// outbound side must not send the next request over the connection it
// verified against the old bundle: the call fails (502) and the remote
// service receives nothing. Plain requests (HTTP/1.1 pool) and gRPC calls
// (HTTP/2 pool). The control rewrites the bundle with both roots: the
// call goes on.
func TestOutboundPooledConnectionNotReusedAfterTrustRemoved(t *testing.T) {
	tests := []struct {
		desc    string
		grpc    bool
		removed bool
	}{
		{desc: "bundle rewritten, root kept/http1"},
		{desc: "bundle rewritten, root kept/grpc", grpc: true},
		{desc: "remote root removed/http1", removed: true},
		{desc: "remote root removed/grpc", grpc: true, removed: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			own, other := meshtest.NewCA(t, "example.org"), meshtest.NewCA(t, "example.org")
			both := string(own.BundlePEM()) + string(other.BundlePEM())
			var served atomic.Int64
			svc := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
				served.Add(1)
				_, _ = io.WriteString(w, r.Header.Get(PeerIDHeader))
			})
			if tc.grpc {
				svc = h2cService(t, func(w http.ResponseWriter, r *http.Request) {
					served.Add(1)
					_, _ = io.WriteString(w, r.Header.Get(PeerIDHeader))
				})
			}
			// payments holds a certificate of the other CA and trusts both.
			paymentsDir := t.TempDir()
			paymentsFiles := other.IssueFiles(paymentsDir, paymentsID)
			writeFile(t, paymentsFiles.Bundle, both)
			payments := startSidecar(t, sidecarConfig(paymentsFiles, svc, []string{ordersID}, nil))
			// orders trusts both, and reaches payments under two names: two
			// pools to the same sidecar, the second unused until the
			// bundle changed, so its first call dials.
			ordersDir := t.TempDir()
			ordersFiles := own.IssueFiles(ordersDir, ordersID)
			writeFile(t, ordersFiles.Bundle, both)
			orders := startSidecar(t, sidecarConfig(ordersFiles, "127.0.0.1:1", []string{edgeID}, map[string][2]string{
				"payments": {payments.Addr("inbound"), paymentsID},
				"probe":    {payments.Addr("inbound"), paymentsID},
			}))
			out := orders.Addr("outbound")
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}}
			if tc.grpc {
				client = h2cClient()
			}
			defer client.CloseIdleConnections()
			var hdr http.Header
			if tc.grpc {
				hdr = http.Header{"Content-Type": {"application/grpc"}}
			}
			call := func(host string) (int, string) {
				t.Helper()
				code, body, err := outboundCall(client, out, host, http.MethodPost, "/charge", strings.NewReader("x"), hdr)
				if err != nil {
					t.Fatalf("%s: %v", host, err)
				}
				return code, body
			}
			if code, body := call("payments"); code != http.StatusOK || body != ordersID {
				t.Fatalf("first call: %d %q", code, body)
			}
			if !tc.removed {
				writeFile(t, ordersFiles.Bundle, both)
			} else {
				writeFile(t, ordersFiles.Bundle, string(own.BundlePEM()))
				// The reload is in force once orders' identity source no
				// longer verifies a certificate of the other CA.
				probe := other.Issue(paymentsID).Leaf
				deadline := time.Now().Add(10 * time.Second)
				for {
					if _, err := orders.current().source.Verify([]*x509.Certificate{probe}); err != nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("orders did not reload its bundle")
					}
					time.Sleep(20 * time.Millisecond)
				}
				// A new connection is refused (probe's pool is empty): so
				// must the pooled one be.
				if code, body := call("probe"); code != http.StatusBadGateway {
					t.Fatalf("a new connection to a sidecar whose root was removed: %d %q, want 502", code, body)
				}
			}
			before := served.Load()
			code, body := call("payments")
			if !tc.removed {
				if code != http.StatusOK || served.Load() != before+1 {
					t.Fatalf("control: %d %q, the service got %d more; want 200 and 1", code, body, served.Load()-before)
				}
				return
			}
			if code != http.StatusBadGateway {
				t.Fatalf("a call to a sidecar whose root was removed got %d %q, want 502", code, body)
			}
			if n := served.Load() - before; n != 0 {
				t.Fatalf("the remote service received %d calls over a connection no longer trusted", n)
			}
		})
	}
}

// h2cService is a service speaking HTTP/1.1 and h2c (a gRPC server
// without TLS), serving h.
func h2cService(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	t.Cleanup(s.Close)
	return hostPort(s)
}
