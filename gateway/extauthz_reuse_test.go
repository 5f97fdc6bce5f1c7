package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
)

// Through the whole edge, with concurrent keep-alive clients: whatever an
// HTTP ext_authz server sends past its answers (testutil.StrayAuthz), each
// request gets its own decision. The protected upstream records what
// reached it: a denied request never does, and an allowed one carries the
// X-Auth-User of its own decision, never another's or a forged one. An
// unsolicited response is one that arrives while the connection is idle:
// there one client waits for it after each allow (bytes that arrive after
// the connection was taken are, in HTTP/1.1, that request's answer).
func TestEdgeExtAuthzNeverTakesStrayBytesAsADecision(t *testing.T) {
	for _, scheme := range []string{"http", "https"} {
		for _, mode := range testutil.StrayAuthzModes {
			t.Run(scheme+"/"+mode, func(t *testing.T) { edgeExtAuthzStray(t, scheme, mode) })
		}
	}
}

// edgeExtAuthzStray is one case of
// TestEdgeExtAuthzNeverTakesStrayBytesAsADecision: over https the
// authorization server speaks HTTP/1.1 only (ALPN http/1.1), as many do.
func edgeExtAuthzStray(t *testing.T, scheme, mode string) {
	var mu sync.Mutex
	reached := map[string]string{} // X-Who -> X-Auth-User the upstream saw
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reached[r.Header.Get("X-Who")] = r.Header.Get("X-Auth-User")
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(backend.Close)
	workers, perWorker := 8, 40
	arrived := make(chan struct{}, 1)
	afterLate := func() {}
	if mode == "unsolicited while idle" {
		workers, perWorker = 1, 320
		afterLate = func() { arrived <- struct{}{} }
	}
	authzURL, caFile := testutil.StrayAuthz(t, mode, afterLate), ""
	if scheme == "https" {
		ca := testutil.NewCA(t)
		certPEM, keyPEM := ca.Leaf(t, "localhost", 2)
		authzURL = testutil.StrayAuthzTLS(t, mode, afterLate, certPEM, keyPEM)
		caFile = filepath.Join(t.TempDir(), "authz-ca.pem")
		writeFile(t, caFile, string(ca.PEM()))
		caFile = fmt.Sprintf(", ca_file: %q", caFile)
	}
	te := startEdge(t, listenHeader+fmt.Sprintf(`authenticators:
  authz:
    ext_authz: {http_url: %q%s, timeout: 5s, headers: [X-Who], upstream_headers: [X-Auth-User]}
upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: up, auth: authz}
`, authzURL, caFile, strings.TrimPrefix(backend.URL, "http://")))
	keepAliveClients(t, workers, perWorker, func(client *http.Client, w, i int) error {
		who := strconv.Itoa(w*1000 + i)
		req := newRequest(http.MethodGet, te.url+"/", nil)
		req.Header.Set("X-Who", who)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if workers == 1 && i%2 == 0 && resp.StatusCode < 500 {
			<-arrived
		}
		if resp.StatusCode >= 500 {
			return nil // a spurious error is no wrong decision
		}
		if want := map[bool]int{true: 200, false: 403}[i%2 == 0]; resp.StatusCode != want {
			return fmt.Errorf("%s: %d, want %d", who, resp.StatusCode, want)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for who, user := range reached {
		if n, _ := strconv.Atoi(who); n%2 == 1 || user != who {
			t.Errorf("the upstream got %s with X-Auth-User %q", who, user)
		}
	}
}
