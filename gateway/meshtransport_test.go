package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// Toward a sidecar, ordinary requests use HTTP/1.1 keep-alive connections
// and gRPC uses HTTP/2; protocol: h2 keeps HTTP/2 for everything.
func TestMeshTransportProtocols(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	tlsFor := func(routes.Upstream) (*tls.Config, error) {
		// What the mesh hands over: both protocols offered.
		return &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, NextProtos: []string{"h2", "http/1.1"}}, nil
	}
	for _, tc := range []struct {
		protocol, contentType, want string
	}{
		{routes.DefaultProtocol, "", "HTTP/1.1"},
		{routes.DefaultProtocol, "application/json", "HTTP/1.1"},
		{routes.DefaultProtocol, "application/grpc-web+proto", "HTTP/1.1"},
		{routes.DefaultProtocol, "application/grpc", "HTTP/2.0"},
		{routes.DefaultProtocol, "application/grpc+proto", "HTTP/2.0"},
		{"h2", "", "HTTP/2.0"},
	} {
		t.Run(tc.protocol+" "+tc.contentType, func(t *testing.T) {
			pool, err := proxy.NewTransportPool("m", routes.Upstream{
				MeshIdentity: "spiffe://example.org/ns/shop/sa/payments", Protocol: tc.protocol,
				MaxIdlePerHost: 4, ConnectTimeout: routes.Duration(time.Second),
			}, tlsFor, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.CloseIdle()
			for range 3 {
				req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x"))
				req.Header.Set("Content-Type", tc.contentType)
				resp, err := pool.Transport.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != tc.want {
					t.Fatalf("request went over %s, want %s", b, tc.want)
				}
			}
		})
	}
}
