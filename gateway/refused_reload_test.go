package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/routes"
)

// refusals are the two ways a file gets refused after it has been parsed:
// by the last feature's prepare (an unknown plugin), or by the runtime
// build once every feature has prepared (an upstream identity that does
// not parse).
var refusals = []struct {
	name      string
	upstreams string // extra upstreams
	plugins   string // a plugins section
}{
	{name: "refused by a feature", plugins: "plugins:\n  broken: {use: no-such-plugin}\n"},
	{name: "refused after every feature prepared", upstreams: "  late: {endpoints: [\"127.0.0.1:9\"], mesh_identity: \"not-a-spiffe-id\"}\n"},
}

// reloadCase is one feature whose section a reload changes from variant
// "a" to "b": probe reports which variant is served now, from outside.
type reloadCase struct {
	name string
	// header is what goes before the upstreams (listeners, the feature's
	// section) for a variant.
	header func(variant string) string
	route  string // extra keys of the route
	// upstream is the route's upstream (default: an echo server).
	upstream func(up string) string
	probe    func(t *testing.T, te *testEdge) string
	// refusedLeavesNoTrace checks what a refused "b" must not have done.
	refusedLeavesNoTrace func(t *testing.T, te *testEdge)
}

// A refused routes file changes nothing anyone can observe: for each
// feature, a file that changes its section and has an error elsewhere
// leaves the served variant as it was; the same section in a good file
// then takes effect.
func TestRefusedReloadChangesNothing(t *testing.T) {
	up := echoUpstream(t, "up")
	for _, rc := range []reloadCase{tlsReloadCase(t), meshReloadCase(t), rateLimitReloadCase(t), accessLogReloadCase(t), tracingReloadCase(t)} {
		t.Run(rc.name, func(t *testing.T) {
			upstream := fmt.Sprintf("{endpoints: [%q]}", hostPort(up))
			if rc.upstream != nil {
				upstream = rc.upstream(hostPort(up))
			}
			file := func(variant, upstreams, plugins string) string {
				return rc.header(variant) + "upstreams:\n  up: " + upstream + "\n" + upstreams +
					"routes:\n  - {name: r, match: {path_prefix: /}, upstream: up" + rc.route + "}\n" + plugins
			}
			te := startEdge(t, file("a", "", ""))
			if got := rc.probe(t, te); got != "a" {
				t.Fatalf("at start %q is served, want a", got)
			}
			for i, refusal := range refusals {
				writeFile(t, te.path, file("b", refusal.upstreams, refusal.plugins)+"# "+strconv.Itoa(i)+"\n")
				if err := te.Reload(context.Background()); err == nil {
					t.Fatalf("%s: the file was accepted", refusal.name)
				}
				if got := rc.probe(t, te); got != "a" {
					t.Fatalf("%s: after the refused reload %q is served, want a", refusal.name, got)
				}
				if rc.refusedLeavesNoTrace != nil {
					rc.refusedLeavesNoTrace(t, te)
				}
			}
			writeFile(t, te.path, file("b", "", ""))
			if err := te.Reload(context.Background()); err != nil {
				t.Fatalf("the good file after the refused ones: %v", err)
			}
			if got := rc.probe(t, te); got != "b" {
				t.Fatalf("after the good reload %q is served, want b", got)
			}
		})
	}
}

// TLS: the certificate the https listener serves, read from a real
// handshake.
func tlsReloadCase(t *testing.T) reloadCase {
	type pair struct{ cert, key string }
	certs := map[string]pair{}
	serials := map[string]string{}
	for _, v := range []string{"a", "b"} {
		c, k, _ := selfSigned(t, t.TempDir(), "api.example.com")
		certs[v] = pair{c, k}
		serials[v] = leafSerial(t, c)
	}
	return reloadCase{
		name: "tls certificates",
		header: func(v string) string {
			return fmt.Sprintf("version: 1\nlisten: {https: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: off}\ntls:\n  certificates: [{cert_file: %q, key_file: %q}]\n", certs[v].cert, certs[v].key)
		},
		probe: func(t *testing.T, te *testEdge) string {
			conn, err := tls.Dial("tcp", te.Addr("https"), &tls.Config{ServerName: "api.example.com", InsecureSkipVerify: true})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer conn.Close()
			got := conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
			for v, s := range serials {
				if s == got {
					return v
				}
			}
			return "unknown certificate " + got
		},
	}
}

func leafSerial(t *testing.T, certFile string) string {
	t.Helper()
	c, err := tls.LoadX509KeyPair(certFile, strings.TrimSuffix(certFile, "cert.pem")+"key.pem")
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.String()
}

// Mesh: the identity the edge presents to a sidecar over mTLS, as the
// sidecar verified it; and the expiry series of an identity never served.
func meshReloadCase(t *testing.T) reloadCase {
	ca := meshtest.NewCA(t, "example.org")
	ids := map[string]string{"a": "spiffe://example.org/ns/edge/sa/a", "b": "spiffe://example.org/ns/edge/sa/b"}
	files := map[string]meshtest.Files{"a": ca.IssueFiles(t.TempDir(), ids["a"]), "b": ca.IssueFiles(t.TempDir(), ids["b"])}
	svc := echoUpstream(t, "orders")
	sidecar := startSidecar(t, sidecarConfig(ca.IssueFiles(t.TempDir(), ordersID), hostPort(svc), []string{ids["a"], ids["b"]}, nil))
	return reloadCase{
		name: "mesh identity and bundle",
		header: func(v string) string {
			f := files[v]
			return listenHeader + fmt.Sprintf("mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q}\n", f.Cert, f.Key, f.Bundle)
		},
		upstream: func(string) string {
			return fmt.Sprintf("{endpoints: [%q], mesh_identity: %q}", sidecar.Addr("inbound"), ordersID)
		},
		probe: func(t *testing.T, te *testEdge) string {
			resp, body := get(t, te.url+"/orders/x")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("through the mesh: %d %s", resp.StatusCode, body)
			}
			seen := decodeEcho(t, body).Header.Get(PeerIDHeader)
			for v, id := range ids {
				if id == seen {
					return v
				}
			}
			return "unknown identity " + seen
		},
		refusedLeavesNoTrace: func(t *testing.T, te *testEdge) {
			_, metrics := get(t, te.admin+"/metrics")
			if strings.Contains(string(metrics), ids["b"]) {
				t.Errorf("the expiry of the refused file's identity %s is published", ids["b"])
			}
		},
	}
}

// Rate limiting: which real redis-server the limiter counts in, and that
// readiness still reports the Redis in use.
func rateLimitReloadCase(t *testing.T) reloadCase {
	rdb := map[string]*testredis.Server{"a": testredis.Start(t), "b": testredis.Start(t)}
	return reloadCase{
		name: "rate-limit store",
		header: func(v string) string {
			return listenHeader + fmt.Sprintf("redis: {url: %q, key_prefix: \"rl:\", timeout: 5s, on_error: deny}\nrate_limits:\n  lim: {key: client_ip, limit: 1000000, per: 1m}\n", rdb[v].URL())
		},
		route: ", rate_limit: lim",
		probe: func(t *testing.T, te *testEdge) string {
			before := map[string]string{}
			for v, s := range rdb {
				before[v] = redisCount(t, s)
			}
			if resp, body := get(t, te.url+"/"); resp.StatusCode != http.StatusOK || resp.Header.Get("RateLimit-Limit") == "" {
				t.Fatalf("limited route: %d %s", resp.StatusCode, body)
			}
			var counted []string
			for v, s := range rdb {
				if redisCount(t, s) != before[v] {
					counted = append(counted, v)
				}
			}
			if len(counted) != 1 {
				return fmt.Sprintf("counted in %v", counted)
			}
			return counted[0]
		},
	}
}

// redisCount is how many limiter decisions s has made: the limiter runs
// its script by EVALSHA, which nothing else here sends.
func redisCount(t *testing.T, s *testredis.Server) string {
	t.Helper()
	info, err := s.Do("INFO", "commandstats")
	if err != nil {
		t.Fatalf("redis: %v", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_evalsha:calls="); ok {
			calls, _, _ := strings.Cut(rest, ",")
			return calls
		}
	}
	return "0"
}

// A refused file whose Redis cannot be reached must not make the edge
// report not-ready: readiness is about the Redis the limiter uses.
func TestRefusedReloadKeepsReadiness(t *testing.T) {
	up := echoUpstream(t, "up")
	good := testredis.Start(t)
	file := func(url, plugins string) string {
		return listenHeader + fmt.Sprintf("redis: {url: %q, timeout: 200ms}\nrate_limits:\n  lim: {key: client_ip, limit: 1000000, per: 1m}\n", url) +
			fmt.Sprintf("upstreams:\n  up: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up, rate_limit: lim}\n", hostPort(up)) + plugins
	}
	te := startEdge(t, file(good.URL(), ""))
	writeFile(t, te.path, file("redis://127.0.0.1:9/0", refusals[0].plugins))
	if err := te.Reload(context.Background()); err == nil {
		t.Fatal("the file was accepted")
	}
	if resp, body := get(t, te.admin+"/readyz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz after a refused file naming an unreachable Redis: %d %s", resp.StatusCode, body)
	}
	if resp, body := get(t, te.url+"/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("limited route: %d %s", resp.StatusCode, body)
	}
}

// Access log: which file a request's line lands in; a refused file's
// output is neither written nor left behind.
func accessLogReloadCase(t *testing.T) reloadCase {
	dir := t.TempDir()
	paths := map[string]string{"a": filepath.Join(dir, "a.log"), "b": filepath.Join(dir, "b.log")}
	var n atomic.Int64
	return reloadCase{
		name: "access log",
		header: func(v string) string {
			return fmt.Sprintf("version: 1\nlisten: {http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: %q}\n", paths[v])
		},
		probe: func(t *testing.T, te *testEdge) string {
			p := fmt.Sprintf("/probe-%d", n.Add(1))
			if resp, body := get(t, te.url+p); resp.StatusCode != http.StatusOK {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			var in []string
			for v, path := range paths {
				data, _ := os.ReadFile(path)
				if strings.Contains(string(data), `"path":"`+p+`"`) {
					in = append(in, v)
				}
			}
			if len(in) != 1 {
				return fmt.Sprintf("logged in %v", in)
			}
			return in[0]
		},
		refusedLeavesNoTrace: func(t *testing.T, te *testEdge) {
			if _, err := os.Stat(paths["b"]); err == nil {
				t.Errorf("the refused file's access log %s was created", paths["b"])
			}
		},
	}
}

// Tracing: which real OTLP collector the spans of a request reach.
func tracingReloadCase(t *testing.T) reloadCase {
	cols := map[string]*collector{"a": startCollector(t), "b": startCollector(t)}
	var n atomic.Int64
	return reloadCase{
		name: "tracing exporter",
		header: func(v string) string {
			return listenHeader + fmt.Sprintf("tracing: {otlp_endpoint: %q, service_name: svc}\n", cols[v].url)
		},
		probe: func(t *testing.T, te *testEdge) string {
			traceID := fmt.Sprintf("%032x", 0xabc000+n.Add(1))
			if resp, body := get(t, te.url+"/", "traceparent", "00-"+traceID+"-00000000000000a1-01"); resp.StatusCode != http.StatusOK {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			// Spans are batched: wait for them rather than flush, so this
			// sees what the exporter in use actually sends.
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				var in []string
				for v, c := range cols {
					if len(c.byTrace(traceID)) > 0 {
						in = append(in, v)
					}
				}
				if len(in) == 1 {
					return in[0]
				}
				if len(in) > 1 {
					return fmt.Sprintf("exported to %v", in)
				}
				time.Sleep(50 * time.Millisecond)
			}
			return "spans exported nowhere"
		},
	}
}

// A refused routes file stays reported (/config's last_reload, LastReload)
// while a route source changes the live configuration: the source's
// changes are built on the file the edge serves, not on the one on disk,
// so their success says nothing about that file, which is still refused.
// A good file then clears the report, and a refused fragment is reported
// when the file is fine.
func TestRefusedFileStaysReportedAcrossSourceChanges(t *testing.T) {
	up := echoUpstream(t, "up")
	file := listenHeader + fmt.Sprintf("upstreams:\n  up: {endpoints: [%q]}\nroutes:\n  - {name: file, match: {path_prefix: /file}, upstream: up}\nproviders:\n  kubernetes: {kubeconfig: \"\"}\n", hostPort(up))
	// Reloads are the test's: a file watcher reloading behind it would
	// race its reads of the outcome.
	te, src := startFedEdge(t, file, func(o *EdgeOptions) { o.ReloadDebounce = time.Hour })
	frag := func(path string) routes.Fragment {
		return routes.Fragment{
			Upstreams: map[string]routes.Upstream{"k8s.up": {Endpoints: []string{hostPort(up)}}},
			Routes:    []routes.Route{{Name: "k8s.r", Match: routes.Match{PathPrefix: path}, Upstream: "k8s.up"}},
		}
	}
	if err := src.send(t, frag("/a")); err != nil {
		t.Fatal(err)
	}
	lastReload := func() ReloadStatus {
		t.Helper()
		_, body := get(t, te.admin+"/config")
		var v struct {
			LastReload ReloadStatus `json:"last_reload"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("/config: %v: %s", err, body)
		}
		if !sameReload(v.LastReload, te.LastReload()) {
			t.Fatalf("/config shows %+v, LastReload %+v", v.LastReload, te.LastReload())
		}
		return v.LastReload
	}
	writeFile(t, te.path, file+"plugins:\n  broken: {use: no-such-plugin}\n")
	if err := te.Reload(context.Background()); err == nil {
		t.Fatal("the broken file was accepted")
	}
	refused := lastReload()
	if refused.OK || !strings.Contains(refused.Error, "no-such-plugin") {
		t.Fatalf("after the refused file: %+v", refused)
	}
	for i, path := range []string{"/b", "/c"} {
		if err := src.send(t, frag(path)); err != nil {
			t.Fatalf("change %d from the source: %v", i, err)
		}
		wantUpstream(t, te.url+path+"/x", "up")
		if got := lastReload(); !sameReload(got, refused) {
			t.Fatalf("after change %d from the source the file's refusal is no longer reported: %+v", i, got)
		}
	}
	writeFile(t, te.path, file)
	if err := te.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := lastReload(); !got.OK {
		t.Fatalf("after a good file: %+v", got)
	}
	bad := routes.Fragment{Routes: []routes.Route{{Name: "k8s.bad", Match: routes.Match{PathPrefix: "/bad"}, Upstream: "k8s.nowhere"}}}
	if err := src.send(t, bad); err == nil {
		t.Fatal("the bad fragment was accepted")
	}
	if got := lastReload(); got.OK || !strings.Contains(got.Error, "k8s.nowhere") {
		t.Fatalf("after a refused fragment: %+v", got)
	}
}

// sameReload compares two reload outcomes, one of them possibly read back
// from JSON (without the monotonic clock reading).
func sameReload(a, b ReloadStatus) bool {
	return a.OK == b.OK && a.Error == b.Error && a.At.Equal(b.At)
}

// What docs/ratelimit.md says of reloads, through the edge, counted in
// memory and in a real Redis: a limit whose name and numbers stay keeps
// every client's state across an accepted reload that changes other
// things (the route's name, another limit) and across a refused one that
// would change its numbers; an accepted change of its numbers starts every
// client afresh with its full burst.
func TestRateLimitStateAcrossReloads(t *testing.T) {
	up := echoUpstream(t, "up")
	rdb := testredis.Start(t)
	for _, store := range []struct{ name, redis string }{
		{"memory", ""},
		{"redis", fmt.Sprintf("redis: {url: %q, on_error: deny}\n", rdb.URL())},
	} {
		t.Run(store.name, func(t *testing.T) {
			file := func(limit int, route, extra string) string {
				return listenHeader + store.redis + fmt.Sprintf("rate_limits:\n  lim: {key: client_ip, limit: %d, per: 1h}\n  other: {key: client_ip, limit: 5, per: 1h}\n", limit) +
					fmt.Sprintf("upstreams:\n  up: {endpoints: [%q]}\nroutes:\n  - {name: %s, match: {path_prefix: /}, upstream: up, rate_limit: lim}\n", hostPort(up), route) + extra
			}
			te := startEdge(t, file(4, "r1", ""), func(o *EdgeOptions) { o.ReloadDebounce = time.Hour })
			codes := func(n int) string {
				t.Helper()
				var out []string
				for range n {
					resp, _ := get(t, te.url+"/")
					out = append(out, strconv.Itoa(resp.StatusCode))
				}
				return strings.Join(out, ",")
			}
			if got := codes(2); got != "200,200" {
				t.Fatalf("first two of four: %s", got)
			}
			steps := []struct {
				name, file string
				refused    bool
				want       string
			}{
				{"a renamed route and another limit changed", strings.Replace(file(4, "r2", ""), "limit: 5", "limit: 6", 1), false, "200"},
				{"a refused file raising the limit", file(100, "r2", "plugins:\n  broken: {use: no-such-plugin}\n"), true, "200,429"},
				{"the limit raised to 6", file(6, "r2", ""), false, "200,200,200,200,200,200,429"},
			}
			for _, s := range steps {
				writeFile(t, te.path, s.file)
				if err := te.Reload(context.Background()); (err != nil) != s.refused {
					t.Fatalf("%s: reload error %v", s.name, err)
				}
				n := strings.Count(s.want, ",") + 1
				if got := codes(n); got != s.want {
					t.Fatalf("%s: %s, want %s", s.name, got, s.want)
				}
			}
		})
	}
}

// connectionsReceived is how many connections the Redis at addr has
// accepted (INFO stats), this reading's own included.
func connectionsReceived(t *testing.T, addr string) int {
	t.Helper()
	info, err := testredis.Do(addr, "INFO", "stats")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_connections_received:"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no total_connections_received in INFO stats of %s", addr)
	return 0
}

// A refused file opens no connection to a Redis it names that is not in
// use: nothing of it goes live, so nothing may reach that Redis (its
// SCRIPT LOAD, a ping), and nothing may be logged about it. Counted on a
// real redis-server (INFO stats: connections received, commandstats);
// the same Redis in a good file is then used (scripts loaded at commit,
// decisions counted in it). Before: building the refused file loaded the
// limiter's scripts into the new Redis, one connection each time, and an
// unreachable one was logged as down although it never went live.
func TestRefusedFileOpensNoConnectionToItsRedis(t *testing.T) {
	up := echoUpstream(t, "up")
	live := testredis.Start(t)
	fresh := testredis.Start(t)
	unreachable := testutil.FreeAddr(t)
	// acme keeps the ACME certificates in Redis too: building the TLS
	// manager reads the listed hosts' certificates from it (for their
	// expiry series).
	const acme = "tls:\n  acme: {email: ops@example.com, hosts: [api.example.com], cache: redis, directory_url: \"https://127.0.0.1:9/directory\"}\n"
	file := func(url, upstreams, plugins string) string {
		return listenHeader + fmt.Sprintf("redis: {url: %q, timeout: 200ms}\nrate_limits:\n  lim: {key: client_ip, limit: 1000000, per: 1m}\n", url) +
			fmt.Sprintf("upstreams:\n  up: {endpoints: [%q]}\n%sroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up, rate_limit: lim}\n", hostPort(up), upstreams) + plugins
	}
	te := startEdge(t, file(live.URL(), "", ""))
	for _, rf := range refusals {
		for _, target := range []struct{ name, url, addr, tls string }{
			{"reachable", fresh.URL(), fresh.Addr, ""},
			{"unreachable", "redis://" + unreachable + "/0", unreachable, ""},
			{"reachable, with the ACME cache", fresh.URL(), fresh.Addr, acme},
		} {
			t.Run(rf.name+"/"+target.name, func(t *testing.T) {
				loadsBefore := testredis.CommandCalls(t, fresh.Addr, "script|load")
				before := connectionsReceived(t, fresh.Addr)
				logsBefore := len(te.logs.String())
				writeFile(t, te.path, file(target.url, rf.upstreams, rf.plugins)+target.tls)
				for range 3 {
					if err := te.Reload(context.Background()); err == nil {
						t.Fatal("the file was accepted")
					}
				}
				if got := connectionsReceived(t, fresh.Addr) - before; got != 1 { // 1: the reading itself
					t.Errorf("the refused file's Redis received %d connections", got-1)
				}
				if n := testredis.CommandCalls(t, fresh.Addr, "script|load") - loadsBefore; n != 0 {
					t.Errorf("the refused file's Redis ran SCRIPT LOAD %d times", n)
				}
				if logs := te.logs.String()[logsBefore:]; strings.Contains(logs, target.addr) {
					t.Errorf("the log speaks of the refused file's Redis:\n%s", logs)
				}
				if resp, body := get(t, te.url+"/"); resp.StatusCode != http.StatusOK {
					t.Fatalf("limited route after the refusal: %d %s", resp.StatusCode, body)
				}
			})
		}
	}
	// The same Redis in a good file goes live: its scripts are loaded at
	// commit and the decisions are counted in it.
	writeFile(t, te.path, file(fresh.URL(), "", ""))
	if err := te.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := testredis.CommandCalls(t, fresh.Addr, "script|load"); n == 0 {
		t.Error("the accepted file's Redis was never sent SCRIPT LOAD")
	}
	if resp, body := get(t, te.url+"/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("limited route: %d %s", resp.StatusCode, body)
	}
	if keys, err := fresh.Do("DBSIZE"); err != nil || keys == "0" {
		t.Errorf("no decision counted in the accepted file's Redis (DBSIZE %q, %v)", keys, err)
	}
}
