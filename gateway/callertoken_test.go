package gateway

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// seen is what one service received, by request: the caller headers and
// the token, as the service itself read them.
type seen struct {
	mu   sync.Mutex
	reqs []http.Header
}

// add records r's headers, with the path the request was for in
// X-Test-Path (for payments: the path orders was asked for).
//
// The body is read to its end, and each trailer the service got is
// recorded as a field named "Trailer-" and its name.
func (s *seen) add(r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	h := r.Header.Clone()
	for k, vv := range r.Trailer {
		if len(vv) > 0 {
			h["Trailer-"+k] = vv
		}
	}
	if h.Get("X-Asked-For") == "" {
		h.Set("X-Test-Path", r.URL.Path)
	} else {
		h.Set("X-Test-Path", h.Get("X-Asked-For"))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, h)
}

func (s *seen) last(t *testing.T) http.Header {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		t.Fatal("the service received nothing")
	}
	return s.reqs[len(s.reqs)-1]
}

type callerMesh struct {
	ca                            *meshtest.CA
	edge                          *testEdge
	orders, payments              *testSidecar
	ordersSeen, paymentsSeen      *seen
	edgeLog, ordersLog, paysLog   string
	keyAlice, keyAdmin            string
	propagate                     atomic.Bool // the orders service passes the token on
	paymentsDirectFromOrdersTLS   *tls.Config
	paymentsAddr, ordersInboundAt string
}

// newCallerMesh: client -> edge (API keys) -mTLS-> orders sidecar ->
// orders service -> orders sidecar outbound (exchange) -mTLS-> payments
// sidecar -> payments service, every hop's access log in a file.
func newCallerMesh(t *testing.T, edgeCache string) *callerMesh {
	dir := t.TempDir()
	cm := &callerMesh{ca: meshtest.NewCA(t, "example.org"), ordersSeen: &seen{}, paymentsSeen: &seen{},
		edgeLog: filepath.Join(dir, "edge.log"), ordersLog: filepath.Join(dir, "orders.log"), paysLog: filepath.Join(dir, "payments.log"),
		keyAlice: "alice-secret-key", keyAdmin: "admin-secret-key"}
	cm.propagate.Store(true)
	edgeFiles := cm.ca.IssueFiles(t.TempDir(), edgeID)
	ordersFiles := cm.ca.IssueFiles(t.TempDir(), ordersID)
	paymentsFiles := cm.ca.IssueFiles(t.TempDir(), paymentsID)

	payments := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		cm.paymentsSeen.add(r)
		_, _ = io.WriteString(w, "charged\n")
	})
	cm.payments = startSidecar(t, fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q}
access_log: {output: %q}
admin: "127.0.0.1:0"
inbound:
  listen: "127.0.0.1:0"
  forward_to: %q
  allow: [%q, %q]
  callers: {issuers: [%q], max_hops: 1, headers: [X-User-Id]}
  rules:
    - match: {path: /strict}
      callers: {max_hops: 0}
    - match: {path_prefix: /charge}
      workloads: [%q]
      callers: {through: [%q]}
`, paymentsFiles.Cert, paymentsFiles.Key, paymentsFiles.Bundle, cm.paysLog, payments, ordersID, edgeID, edgeID, ordersID, ordersID))
	cm.paymentsAddr = cm.payments.Addr("inbound")

	var ordersOutbound atomic.Value
	orders := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		cm.ordersSeen.add(r)
		path := "/charge"
		if strings.HasSuffix(r.URL.Path, "/strict") {
			path = "/strict"
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+ordersOutbound.Load().(string)+path, nil)
		req.Host = "payments"
		req.Header.Set("X-Asked-For", r.URL.Path)
		if cm.propagate.Load() {
			req.Header.Set("Causeway-Caller", r.Header.Get("Causeway-Caller"))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	})
	cm.orders = startSidecar(t, fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q}
access_log: {output: %q}
admin: "127.0.0.1:0"
inbound:
  listen: "127.0.0.1:0"
  forward_to: %q
  allow: [%q]
  callers: {issuers: [%q], headers: [X-User-Id]}
  rules:
    - match: {path_prefix: /orders/admin, methods: [POST]}
      workloads: [%q]
      callers: {require_claims: {sub: admin}}
    - match: {path_prefix: /orders/public}
      callers: {anonymous: true}
outbound:
  listen: "127.0.0.1:0"
  services:
    payments: {endpoints: [%q], identity: %q}
`, ordersFiles.Cert, ordersFiles.Key, ordersFiles.Bundle, cm.ordersLog, orders, edgeID, edgeID, edgeID, cm.paymentsAddr, paymentsID))
	ordersOutbound.Store(cm.orders.Addr("outbound"))
	cm.ordersInboundAt = cm.orders.Addr("inbound")

	keys := filepath.Join(dir, "keys")
	writeFile(t, keys, fmt.Sprintf("alice:%s\nadmin:%s\n", sha(cm.keyAlice), sha(cm.keyAdmin)))
	cm.edge = startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: %q}
mesh:
  trust_domain: example.org
  cert_file: %q
  key_file: %q
  bundle_file: %q
  caller_token: {cache: %s}
authenticators:
  users: {api_key: {keys_file: %q, forward_name: X-User-Id}}
plugins:
  restate-user: {use: headers, config: {request: {set: {X-User-Id: admin}}}}
upstreams:
  orders: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: public, match: {path_prefix: /orders/public}, upstream: orders}
  - {name: restated, match: {path_prefix: /orders/restated}, upstream: orders, auth: [users], plugins: [restate-user]}
  - {name: orders, match: {path_prefix: /orders}, upstream: orders, auth: [users]}
`, cm.edgeLog, edgeFiles.Cert, edgeFiles.Key, edgeFiles.Bundle, edgeCache, keys, cm.ordersInboundAt, ordersID))

	src, _ := cm.ca.Source(ordersID)
	cm.paymentsDirectFromOrdersTLS = mesh.ClientConfig(src, mustParseID(t, paymentsID))
	return cm
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func (cm *callerMesh) do(t *testing.T, method, path, key string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, cm.edge.url+path, nil)
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// direct calls the payments sidecar as the orders workload, without the
// edge or the orders sidecar, with token as the caller token.
func (cm *callerMesh) direct(t *testing.T, path string, tokens ...string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cm.paymentsDirectFromOrdersTLS, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+cm.paymentsAddr+path, nil)
	for _, tok := range tokens {
		if tok != "" {
			req.Header.Add("Causeway-Caller", tok)
		}
	}
	// A workload may send these too: only a verified token sets them.
	req.Header.Set("X-User-Id", "mallory")
	req.Header.Set("X-Causeway-Caller-Subject", "mallory")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCallerThroughMesh: the user the edge authenticated arrives at the
// first and the second service, and every misuse of a token is refused.
func TestCallerThroughMesh(t *testing.T) {
	cm := newCallerMesh(t, "0s") // a token per request: the request id travels
	spoof := []string{"Causeway-Caller", "forged", "X-Causeway-Caller-Subject", "admin", "X-User-Id", "admin"}

	code, body := cm.do(t, "GET", "/orders/1", cm.keyAlice, spoof...)
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	o, p := cm.ordersSeen.last(t), cm.paymentsSeen.last(t)
	for name, h := range map[string]http.Header{"orders": o, "payments": p} {
		if got := h.Get("X-Causeway-Caller-Subject"); got != "alice" {
			t.Errorf("%s saw subject %q, want alice", name, got)
		}
		if got := h.Get("X-User-Id"); got != "alice" {
			t.Errorf("%s saw X-User-Id %q, want alice (the client's copy must never arrive)", name, got)
		}
		if got := h.Get("X-Causeway-Caller-Authenticator"); got != "users" {
			t.Errorf("%s saw authenticator %q", name, got)
		}
		if h.Get("X-Causeway-Caller-Request-Id") == "" {
			t.Errorf("%s saw no request id", name)
		}
	}
	if got := o.Get("X-Causeway-Caller-Chain"); got != edgeID {
		t.Errorf("orders saw chain %q", got)
	}
	if got := p.Get("X-Causeway-Caller-Chain"); got != edgeID+","+ordersID {
		t.Errorf("payments saw chain %q", got)
	}
	ordersToken := o.Get("Causeway-Caller")
	if ordersToken == "" || ordersToken == "forged" {
		t.Fatalf("orders got token %q", ordersToken)
	}

	t.Run("a header a route's plugin restates is not signed", func(t *testing.T) {
		// The route's own upstream gets what its plugin set (the operator
		// asked for it), but the token vouches for what the authenticator
		// set: the next service sees alice, as the sidecar verifies it.
		if code, body := cm.do(t, "GET", "/orders/restated/1", cm.keyAlice); code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		o, p := cm.ordersSeen.last(t), cm.paymentsSeen.last(t)
		for name, h := range map[string]http.Header{"orders": o, "payments": p} {
			if got := h.Get("X-User-Id"); got != "alice" {
				t.Errorf("%s saw X-User-Id %q from the caller token, want alice", name, got)
			}
		}
	})
	t.Run("a rule refusing a role gives 403", func(t *testing.T) {
		if code, body := cm.do(t, "POST", "/orders/admin/purge", cm.keyAlice); code != http.StatusForbidden || !strings.Contains(body, `"error"`) {
			t.Fatalf("alice: %d %s", code, body)
		}
		if code, body := cm.do(t, "POST", "/orders/admin/purge", cm.keyAdmin); code != 200 {
			t.Fatalf("admin: %d %s", code, body)
		}
	})
	t.Run("anonymous through the edge", func(t *testing.T) {
		n := len(cm.ordersSeen.reqs)
		// Orders lets anonymous callers in on /orders/public; payments'
		// /charge rule does not, and orders returns its answer.
		if code, body := cm.do(t, "GET", "/orders/public/x", "", spoof...); code != http.StatusForbidden || !strings.Contains(body, "authenticated caller") {
			t.Fatalf("%d %s", code, body)
		}
		o := cm.ordersSeen.last(t)
		if len(cm.ordersSeen.reqs) != n+1 || o.Get("X-Causeway-Caller-Anonymous") != "true" || o.Get("X-Causeway-Caller-Subject") != "" || o.Get("X-User-Id") != "" {
			t.Fatalf("orders saw %v", o)
		}
	})
	t.Run("trailers cannot state what only a verified token states", func(t *testing.T) {
		// An anonymous request: the edge states no X-User-Id, and the
		// orders sidecar sets none from the token, so nothing in the
		// header stands in the way of a client's trailer of that name.
		forged := [][2]string{{"X-User-Id", "admin"}, {"Causeway-Caller", "forged"}, {"X-Causeway-Caller-Subject", "root"}, {"X-Ok", "1"}}
		req, _ := http.NewRequest(http.MethodPost, cm.edge.url+"/orders/public/t", io.MultiReader(strings.NewReader("body")))
		req.Trailer = http.Header{}
		for _, kv := range forged {
			req.Trailer[kv[0]] = []string{kv[1]}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		o := cm.ordersSeen.last(t)
		if o.Get("X-Test-Path") != "/orders/public/t" {
			t.Fatalf("orders last saw %q", o.Get("X-Test-Path"))
		}
		if got := o.Get("Trailer-X-Ok"); got != "1" {
			t.Errorf("orders got trailer X-Ok %q, want 1 (trailers are forwarded)", got)
		}
		for _, kv := range forged[:3] {
			if got := o.Get("Trailer-" + kv[0]); got != "" {
				t.Errorf("orders got the client's trailer %s: %q", kv[0], got)
			}
		}
	})
	t.Run("a token replayed to another service is refused", func(t *testing.T) {
		code, body := cm.direct(t, "/charge", ordersToken)
		if code != http.StatusUnauthorized || !strings.Contains(body, "audience") {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("two tokens are refused", func(t *testing.T) {
		if code, body := cm.direct(t, "/other", ordersToken, "unchecked"); code != http.StatusUnauthorized || !strings.Contains(body, "more than one") {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("a forged token is refused", func(t *testing.T) {
		parts := strings.Split(ordersToken, ".")
		for name, tok := range map[string]string{
			"garbage":      "forged",
			"no signature": parts[0] + "." + parts[1] + ".",
			"alg none":     "eyJhbGciOiJub25lIn0." + parts[1] + ".",
		} {
			if code, body := cm.direct(t, "/charge", tok); code != http.StatusUnauthorized {
				t.Errorf("%s: %d %s", name, code, body)
			}
		}
	})
	t.Run("a direct call is anonymous, or refused where a rule wants a caller", func(t *testing.T) {
		n := len(cm.paymentsSeen.reqs)
		if code, body := cm.direct(t, "/other", ""); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		if h := cm.paymentsSeen.last(t); len(cm.paymentsSeen.reqs) != n+1 || h.Get("X-Causeway-Caller-Chain") != "" || h.Get("X-Causeway-Caller-Anonymous") != "" ||
			h.Get("X-User-Id") != "" || h.Get("X-Causeway-Caller-Subject") != "" {
			t.Fatalf("payments saw caller headers on a direct call: %v", h)
		}
		if code, body := cm.direct(t, "/charge", ""); code != http.StatusUnauthorized {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("a chain longer than max_hops is refused", func(t *testing.T) {
		n := len(cm.paymentsSeen.reqs)
		if code, body := cm.do(t, "GET", "/orders/strict", cm.keyAlice); code != http.StatusForbidden {
			t.Fatalf("%d %s", code, body)
		}
		if len(cm.paymentsSeen.reqs) != n {
			t.Fatal("payments received the refused request")
		}
	})
	t.Run("the service that does not pass the token on makes a direct call", func(t *testing.T) {
		cm.propagate.Store(false)
		defer cm.propagate.Store(true)
		if code, _ := cm.do(t, "GET", "/orders/2", cm.keyAlice); code != http.StatusUnauthorized {
			t.Fatalf("charge without the caller: %d", code)
		}
	})
	t.Run("tokens never reach the access logs", func(t *testing.T) {
		time.Sleep(100 * time.Millisecond) // the logs are written after the response
		for _, f := range []string{cm.edgeLog, cm.ordersLog, cm.paysLog} {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) == 0 {
				t.Fatalf("%s is empty", f)
			}
			for _, secret := range []string{ordersToken, parts3(ordersToken), cm.keyAlice} {
				if strings.Contains(string(b), secret) {
					t.Errorf("%s contains a token or key", filepath.Base(f))
				}
			}
		}
	})
	_, metrics := get(t, "http://"+cm.payments.Addr("admin")+"/metrics")
	for _, want := range []string{`causeway_caller_tokens_total{direction="inbound",result="audience"}`, `causeway_caller_tokens_total{direction="inbound",result="ok"}`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// parts3 is a token's signature, which must not be logged either.
func parts3(tok string) string {
	p := strings.Split(tok, ".")
	return p[len(p)-1]
}

// TestCallerTokensConcurrent: many users at once through the edge and two
// sidecars, with the token caches on; every request reaches both services
// as the user who sent it, never as another.
func TestCallerTokensConcurrent(t *testing.T) {
	cm := newCallerMesh(t, "30s")
	var wg sync.WaitGroup
	var bad atomic.Int64
	keys := map[string]string{"alice": cm.keyAlice, "admin": cm.keyAdmin}
	for w := range 8 {
		wg.Go(func() {
			for i := range 60 {
				user := []string{"alice", "admin"}[(w+i)%2]
				code, body := cm.do(t, "GET", fmt.Sprintf("/orders/%s/%d", user, i), keys[user])
				if code != 200 {
					t.Errorf("%s: %d %s", user, code, body)
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	check := func(name string, s *seen) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.reqs) != 480 {
			t.Errorf("%s received %d requests, want 480", name, len(s.reqs))
		}
		for _, h := range s.reqs {
			// /orders/<user>/<i>: the user who sent it.
			user := strings.Split(h.Get("X-Test-Path"), "/")[2]
			if h.Get("X-Causeway-Caller-Subject") != user || h.Get("X-User-Id") != user {
				t.Fatalf("%s: a request of %s arrived as subject %q, X-User-Id %q", name, user, h.Get("X-Causeway-Caller-Subject"), h.Get("X-User-Id"))
			}
		}
	}
	check("orders", cm.ordersSeen)
	check("payments", cm.paymentsSeen)
}

// TestCallerHeadersUnderscoredDropped: with server.allow_underscore_headers,
// a mesh caller's X_User_Id (a header the sidecar states only from a
// verified token, inbound.callers.headers) and Causeway_Caller never reach
// the service, which, if CGI-style, would read them as HTTP_X_USER_ID and
// HTTP_CAUSEWAY_CALLER; other underscored names still do.
func TestCallerHeadersUnderscoredDropped(t *testing.T) {
	t.Run("with callers", func(t *testing.T) {
		underscoredDropped(t, "  callers: {issuers: [\""+edgeID+"\"], headers: [X-User-Id]}\n", true)
	})
	// Without callers the sidecar verifies no token and passes none on, so
	// a copy under a CGI-style spelling must not reach the service either.
	t.Run("without callers", func(t *testing.T) { underscoredDropped(t, "", false) })
}

func underscoredDropped(t *testing.T, callers string, owned bool) {
	ca := meshtest.NewCA(t, "example.org")
	svcSeen := &seen{}
	svc := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		svcSeen.add(r)
		_, _ = io.WriteString(w, "ok\n")
	})
	files := ca.IssueFiles(t.TempDir(), ordersID)
	sc := startSidecar(t, fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q}
server: {allow_underscore_headers: true}
access_log: {output: "off"}
admin: "127.0.0.1:0"
inbound:
  listen: "127.0.0.1:0"
  forward_to: %q
  allow: [%q]
%s`, files.Cert, files.Key, files.Bundle, svc, edgeID, callers))
	src, _ := ca.Source(edgeID)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: mesh.ClientConfig(src, mustParseID(t, ordersID)), ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for _, tc := range []struct {
		name    string
		owned   bool // needs callers.headers
		headers map[string]string
		dropped []string
		kept    []string
	}{
		{"underscored owned header", true, map[string]string{"X_User_Id": "mallory", "X_Other": "kept"}, []string{"X_User_Id"}, []string{"X_Other"}},
		{"underscored, other case", true, map[string]string{"x_user-id": "mallory"}, []string{"x_user-id"}, nil},
		{"underscored token header", false, map[string]string{"Causeway_Caller": "forged"}, []string{"Causeway_Caller"}, nil},
		{"underscored token header, other case", false, map[string]string{"causeway_CALLER": "forged"}, []string{"causeway_CALLER"}, nil},
	} {
		if tc.owned && !owned {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "https://"+sc.Addr("inbound")+"/x", nil)
			for k, v := range tc.headers {
				req.Header[k] = []string{v}
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := svcSeen.last(t)
			for _, k := range tc.dropped {
				if v, ok := got[http.CanonicalHeaderKey(k)]; ok {
					t.Errorf("the service got the caller's %s = %q", k, v)
				}
			}
			for _, k := range tc.kept {
				if _, ok := got[http.CanonicalHeaderKey(k)]; !ok {
					t.Errorf("%s was dropped, though no one owns it", k)
				}
			}
		})
	}
}
