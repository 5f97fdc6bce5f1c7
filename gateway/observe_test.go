package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/routes"
)

// sample is the value of one series of reg: a counter's or gauge's value,
// or a histogram's sample count. ok is false when the series is absent.
func sample(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	f := family(fams, name)
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range labels {
			if labelOf(m, k) != v {
				continue next
			}
		}
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// labelValues lists every value label takes in family name.
func labelValues(t *testing.T, reg prometheus.Gatherer, name, label string) []string {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	if f := family(fams, name); f != nil {
		for _, m := range f.GetMetric() {
			out = append(out, labelOf(m, label))
		}
	}
	sort.Strings(out)
	return out
}

// observedEdge is an edge with auth, a rate limit, a healthy and a dead
// upstream and a mesh identity, and a sidecar behind it, after known
// traffic: every metric family has a value to check.
type observedEdge struct {
	edge       *testEdge
	sidecar    *testSidecar
	logPath    string
	sidecarLog string
	dead       string
	upURL      string
}

const apiKey = "k3y-s3cret-value"

func startObservedEdge(t *testing.T) *observedEdge {
	t.Helper()
	ca := meshtest.NewCA(t, "example.org")
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	svc := echoUpstream(t, "orders")
	sidecarLog := filepath.Join(t.TempDir(), "sidecar-access.log")
	sc := startSidecar(t, strings.Replace(sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID}, nil),
		`access_log: {output: "off"}`, fmt.Sprintf("access_log: {output: %q}", sidecarLog), 1))
	up := echoUpstream(t, "up")
	dead := freeAddr(t)
	keys := writeKeys(t, map[string]string{"acme": apiKey})
	logPath := filepath.Join(t.TempDir(), "access.log")
	te := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: %q}
mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q}
authenticators:
  partners: {api_key: {header: X-API-Key, keys_file: %q}}
rate_limits:
  per-key: {key: api_key, limit: 1, per: 1m}
upstreams:
  up: {endpoints: [%q]}
  dead: {endpoints: [%q]}
  orders: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: open, match: {path_prefix: /open}, upstream: up}
  - {name: partners, match: {path_prefix: /partners}, auth: partners, upstream: up}
  - {name: limited, match: {path: /limited}, auth: partners, rate_limit: per-key, upstream: up}
  - {name: broken, match: {path: /broken}, upstream: dead}
  - {name: orders, match: {path_prefix: /orders}, upstream: orders}
`, logPath, edgeFiles.Cert, edgeFiles.Key, edgeFiles.Bundle, keys, hostPort(up), dead, sc.Addr("inbound"), ordersID))

	send := func(method, path string, status int, hdr ...string) {
		t.Helper()
		req, _ := http.NewRequest(method, te.url+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != status {
			t.Fatalf("%s %s: status %d, want %d", method, path, resp.StatusCode, status)
		}
	}
	for i := range 3 {
		send("GET", fmt.Sprintf("/open/item/%d", i), 200)
	}
	send("POST", "/open/x", 200)
	send("BREW", "/open/x", 200) // a method outside the standard set
	send("GET", "/partners/1", 200, "X-API-Key", apiKey)
	send("GET", "/partners/2", 401)
	send("GET", "/partners/3", 401, "X-API-Key", "wrong")
	send("GET", "/limited", 200, "X-API-Key", apiKey)
	send("GET", "/limited", 429, "X-API-Key", apiKey)
	send("GET", "/broken", 502)
	send("GET", "/orders/1", 200)
	send("GET", "/nowhere/user-4711", 404)
	return &observedEdge{edge: te, sidecar: sc, logPath: logPath, sidecarLog: sidecarLog, dead: dead, upURL: up.URL}
}

// TestMetricFamilies checks every metric family of docs/observability.md (and the
// edge's extras) after known traffic.
func TestMetricFamilies(t *testing.T) {
	oe := startObservedEdge(t)
	te, sc := oe.edge, oe.sidecar
	tests := []struct {
		name   string
		reg    prometheus.Gatherer
		metric string
		labels map[string]string
		want   float64
	}{
		{"requests by route", te.registry, "causeway_requests_total", map[string]string{"route": "open", "method": "GET", "code": "200"}, 3},
		{"requests: POST", te.registry, "causeway_requests_total", map[string]string{"route": "open", "method": "POST", "code": "200"}, 1},
		{"requests: unknown method bounded", te.registry, "causeway_requests_total", map[string]string{"route": "open", "method": "OTHER", "code": "200"}, 1},
		{"requests: refused by auth", te.registry, "causeway_requests_total", map[string]string{"route": "partners", "method": "GET", "code": "401"}, 2},
		{"requests: rate limited", te.registry, "causeway_requests_total", map[string]string{"route": "limited", "method": "GET", "code": "429"}, 1},
		{"requests: upstream down", te.registry, "causeway_requests_total", map[string]string{"route": "broken", "method": "GET", "code": "502"}, 1},
		{"requests: no route", te.registry, "causeway_requests_total", map[string]string{"route": "_unmatched", "method": "GET", "code": "404"}, 1},
		{"request duration", te.registry, "causeway_request_duration_seconds", map[string]string{"route": "open"}, 5},
		{"request duration: refused requests too", te.registry, "causeway_request_duration_seconds", map[string]string{"route": "partners"}, 3},
		{"upstream requests", te.registry, "causeway_upstream_requests_total", map[string]string{"upstream": "up", "endpoint": strings.TrimPrefix(oe.upURL, "http://"), "code": "200"}, 7},
		{"upstream failure", te.registry, "causeway_upstream_requests_total", map[string]string{"upstream": "dead", "endpoint": oe.dead, "code": "502"}, 1},
		{"upstream duration", te.registry, "causeway_upstream_duration_seconds", map[string]string{"upstream": "up"}, 7},
		{"ratelimit allowed", te.registry, "causeway_ratelimit_decisions_total", map[string]string{"limit": "per-key", "decision": "allowed"}, 1},
		{"ratelimit limited", te.registry, "causeway_ratelimit_decisions_total", map[string]string{"limit": "per-key", "decision": "limited"}, 1},
		{"auth missing", te.registry, "causeway_auth_failures_total", map[string]string{"authenticator": "partners", "reason": "missing"}, 1},
		{"auth unknown key", te.registry, "causeway_auth_failures_total", map[string]string{"authenticator": "partners", "reason": "unknown_key"}, 1},
		{"config reloads", te.registry, "causeway_config_reloads_total", map[string]string{"result": "success"}, 1},
		{"config reload failures start at 0", te.registry, "causeway_config_reloads_total", map[string]string{"result": "failure"}, 0},
		{"in flight back to 0", te.registry, "causeway_requests_in_flight", map[string]string{}, 0},
		{"mesh inbound at the sidecar", sc.registry, "causeway_mesh_requests_total", map[string]string{"direction": "inbound", "peer": edgeID, "code": "200"}, 1},
		{"sidecar's own requests", sc.registry, "causeway_requests_total", map[string]string{"route": "inbound", "method": "GET", "code": "200"}, 1},
		{"sidecar reloads", sc.registry, "causeway_config_reloads_total", map[string]string{"result": "success"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := sample(t, tt.reg, tt.metric, tt.labels)
			if !ok {
				t.Fatalf("%s%v absent", tt.metric, tt.labels)
			}
			if got != tt.want {
				t.Fatalf("%s%v = %v, want %v", tt.metric, tt.labels, got, tt.want)
			}
		})
	}

	t.Run("certificate expiry of the edge's and the sidecar's identities", func(t *testing.T) {
		for _, c := range []struct {
			reg prometheus.Gatherer
			id  string
		}{{te.registry, edgeID}, {sc.registry, ordersID}} {
			v, ok := sample(t, c.reg, "causeway_certificate_expiry_timestamp_seconds", map[string]string{"name": c.id})
			if !ok || v < 1e9 {
				t.Errorf("expiry of %s = %v (present %v), want a Unix time", c.id, v, ok)
			}
		}
	})

	t.Run("endpoint health", func(t *testing.T) {
		v, ok := sample(t, te.registry, "causeway_upstream_endpoint_healthy", map[string]string{"upstream": "up", "endpoint": strings.TrimPrefix(oe.upURL, "http://")})
		if !ok || v != 1 {
			t.Fatalf("healthy{upstream=up} = %v (present %v), want 1", v, ok)
		}
		for _, ep := range labelValues(t, te.registry, "causeway_upstream_endpoint_healthy", "endpoint") {
			if ep == "" {
				t.Error("an endpoint_healthy series without an endpoint")
			}
		}
	})

	t.Run("label values are bounded", func(t *testing.T) {
		var out bytes.Buffer
		resp, body := get(t, te.admin+"/metrics")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics status %d", resp.StatusCode)
		}
		out.Write(body)
		for _, leak := range []string{"/open/item", "user-4711", "/nowhere", "BREW", apiKey, "acme"} {
			if strings.Contains(out.String(), leak) {
				t.Errorf("/metrics contains %q", leak)
			}
		}
		for _, m := range labelValues(t, te.registry, "causeway_requests_total", "method") {
			if methodLabel(m) != m {
				t.Errorf("method label %q", m)
			}
		}
	})
}

// promtool finds promtool on PATH or in the repository's .tools/bin, where
// scripts/deps.sh installs it.
func promtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if p, err := filepath.Abs("../.tools/bin/promtool"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("promtool not found on PATH or in .tools/bin: run `make deps` (scripts/deps.sh installs it from Debian's prometheus package)")
	return ""
}

// TestPromtoolCheckMetrics lints the exposition of the edge and the sidecar
// with promtool after traffic, so every family has series.
func TestPromtoolCheckMetrics(t *testing.T) {
	bin := promtool(t)
	t.Run("promtool refuses a bad exposition", func(t *testing.T) {
		// So a pass below means something: a counter without _total.
		cmd := exec.Command(bin, "check", "metrics")
		cmd.Stdin = strings.NewReader("# HELP causeway_bad A counter.\n# TYPE causeway_bad counter\ncauseway_bad 1\n")
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("promtool accepted a counter without _total:\n%s", out)
		}
	})
	oe := startObservedEdge(t)
	for _, target := range []struct{ name, url string }{
		{"edge", oe.edge.admin + "/metrics"},
		{"sidecar", "http://" + oe.sidecar.Addr("admin") + "/metrics"},
	} {
		t.Run(target.name, func(t *testing.T) {
			_, body := get(t, target.url)
			cmd := exec.Command(bin, "check", "metrics")
			cmd.Stdin = bytes.NewReader(body)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("promtool check metrics: %v\n%s", err, out)
			}
		})
	}
}

// TestAdminViews reads /routes and /upstreams of the edge and the sidecar
// after known traffic.
func TestAdminViews(t *testing.T) {
	oe := startObservedEdge(t)
	te := oe.edge

	var rv RoutesView
	getJSON(t, te.admin+"/routes", &rv)
	if rv.Role != "edge" || len(rv.Routes) != 5 {
		t.Fatalf("/routes: role %q, %d routes", rv.Role, len(rv.Routes))
	}
	byName := map[string]RouteView{}
	for _, r := range rv.Routes {
		byName[r.Name] = r
	}
	tests := []struct {
		route            string
		requests, errors float64
		class            map[string]float64
	}{
		{"open", 5, 0, map[string]float64{"2xx": 5}},
		{"partners", 3, 0, map[string]float64{"2xx": 1, "4xx": 2}},
		{"limited", 2, 0, map[string]float64{"2xx": 1, "4xx": 1}},
		{"broken", 1, 1, map[string]float64{"5xx": 1}},
		{"orders", 1, 0, map[string]float64{"2xx": 1}},
	}
	for _, tt := range tests {
		t.Run("route "+tt.route, func(t *testing.T) {
			r, ok := byName[tt.route]
			if !ok {
				t.Fatalf("route %s missing", tt.route)
			}
			if r.Traffic.Requests != tt.requests || r.Traffic.Errors != tt.errors || fmt.Sprint(r.Traffic.ByClass) != fmt.Sprint(tt.class) {
				t.Fatalf("traffic %+v, want %v requests, %v errors, %v", r.Traffic, tt.requests, tt.errors, tt.class)
			}
			if r.Traffic.MeanMS <= 0 {
				t.Errorf("mean duration %v", r.Traffic.MeanMS)
			}
		})
	}
	t.Run("route details", func(t *testing.T) {
		p := byName["limited"]
		if p.Match.Path != "/limited" || p.Upstream != "up" || fmt.Sprint(p.Auth) != "[partners]" || fmt.Sprint(p.RateLimit) != "[per-key]" {
			t.Fatalf("limited: %+v", p)
		}
		if rv.Unmatched.Requests != 1 {
			t.Errorf("unmatched %+v, want 1", rv.Unmatched)
		}
	})

	var uv UpstreamsView
	getJSON(t, te.admin+"/upstreams", &uv)
	ups := map[string]UpstreamView{}
	for _, u := range uv.Upstreams {
		ups[u.Name] = u
	}
	t.Run("upstreams", func(t *testing.T) {
		if len(ups) != 3 {
			t.Fatalf("upstreams %+v", uv.Upstreams)
		}
		dead := ups["dead"]
		if len(dead.Endpoints) != 1 || dead.Endpoints[0].Endpoint != oe.dead || dead.Traffic.Errors != 1 || dead.Endpoints[0].Traffic.Errors != 1 {
			t.Fatalf("dead: %+v", dead)
		}
		if up := ups["up"]; up.Traffic.Requests != 7 || up.Balance != "round_robin" || len(up.Endpoints) != 1 || up.Endpoints[0].Traffic.Requests != 7 {
			t.Fatalf("up: %+v", up)
		}
		if o := ups["orders"]; o.MeshIdentity != ordersID || o.Traffic.Requests != 1 {
			t.Fatalf("orders: %+v", o)
		}
		// The upstream reports its endpoints' state (EndpointStatser).
		for _, ep := range ups["up"].Endpoints {
			if ep.Healthy == nil || !*ep.Healthy || ep.InFlight == nil || *ep.InFlight != 0 || ep.EWMAMS == nil || *ep.EWMAMS <= 0 {
				t.Errorf("up endpoint %+v: want healthy, nothing in flight, a latency EWMA", ep)
			}
		}
		if h := ups["up"].Healthy; h != 1 {
			t.Errorf("up: %d healthy endpoints, want 1", h)
		}
	})

	t.Run("sidecar", func(t *testing.T) {
		admin := "http://" + oe.sidecar.Addr("admin")
		var srv RoutesView
		getJSON(t, admin+"/routes", &srv)
		// The inbound listener's two routes to the local service: gRPC
		// calls (on h2c) and the rest; the one request was plain HTTP.
		if srv.Role != "sidecar" || len(srv.Routes) != 2 || srv.Routes[0].Name != "inbound" || srv.Routes[0].Listener != "inbound" ||
			srv.Routes[0].Traffic.Requests != 1 || srv.Routes[1].Name != "inbound-grpc" || srv.Routes[1].Traffic.Requests != 0 {
			t.Fatalf("sidecar /routes %+v", srv)
		}
		if resp, body := get(t, admin+"/"); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "<title>Causeway sidecar</title>") {
			t.Errorf("sidecar dashboard: %d", resp.StatusCode)
		}
		var suv UpstreamsView
		getJSON(t, admin+"/upstreams", &suv)
		if len(suv.Upstreams) != 2 || suv.Upstreams[0].Name != "local" || suv.Upstreams[0].Traffic.Requests != 1 || suv.Upstreams[1].Name != "local-grpc" {
			t.Fatalf("sidecar /upstreams %+v", suv)
		}
	})
}

// TestRoutesViewDetails: split targets with their header overrides, claim
// names (not their values), strip_prefix.
func TestRoutesViewDetails(t *testing.T) {
	a, b := echoUpstream(t, "a"), echoUpstream(t, "b")
	keys := writeKeys(t, map[string]string{"acme": apiKey})
	te := startEdge(t, listenHeader+fmt.Sprintf(`authenticators:
  partners: {api_key: {keys_file: %q}}
upstreams:
  a: {endpoints: [%q]}
  b: {endpoints: [%q]}
routes:
  - name: canary
    match: {path_prefix: /c, headers: {X-Env: prod}}
    strip_prefix: true
    split: [{upstream: a, weight: 90}, {upstream: b, weight: 10, headers: {X-Canary: "true"}}]
  - {name: claims, match: {path: /k}, auth: partners, require_claims: {scope: "orders:write", tier: gold}, upstream: a}
`, keys, hostPort(a), hostPort(b)))
	var rv RoutesView
	getJSON(t, te.admin+"/routes", &rv)
	if len(rv.Routes) != 2 {
		t.Fatalf("routes %+v", rv.Routes)
	}
	byName := map[string]RouteView{}
	for _, r := range rv.Routes {
		byName[r.Name] = r
	}
	c := byName["canary"]
	if !c.StripPrefix || c.Match.Headers["X-Env"] != "prod" || len(c.Split) != 2 || c.Split[1].Headers["X-Canary"] != "true" || c.Split[0].Weight != 90 {
		t.Errorf("canary: %+v", c)
	}
	if k := byName["claims"]; fmt.Sprint(k.RequireClaims) != "[scope tier]" {
		t.Errorf("claims: %+v", k)
	}
	if _, body := get(t, te.admin+"/routes"); strings.Contains(string(body), "orders:write") || strings.Contains(string(body), "gold") {
		t.Error("/routes shows required claim values")
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, body := get(t, url)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET %s: %d %s: %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
}

// TestAccessLog checks the fields of the access log and that no credential
// reaches it, the edge's own log, the metrics or the admin views.
func TestAccessLog(t *testing.T) {
	oe := startObservedEdge(t)
	te := oe.edge
	const (
		bearer = "b3arer-s3cret"
		cookie = "c00kie-s3cret"
		query  = "qu3ry-s3cret"
	)
	req, _ := http.NewRequest(http.MethodPost, te.url+"/partners/orders?token="+query+"&api_key="+query+"&page=2", strings.NewReader("hello"))
	req.Header.Set("X-API-Key", apiKey)
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Cookie", "session="+cookie)
	req.Header.Set("X-Request-Id", "redaction-1")
	req.Header.Set("traceparent", "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var line map[string]any
	waitFor(t, func() bool {
		for _, l := range accessLines(t, oe.logPath) {
			if l["request_id"] == "redaction-1" {
				line = l
				return true
			}
		}
		return false
	})
	want := map[string]any{
		"msg": "request", "request_id": "redaction-1", "trace_id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"route": "partners", "upstream": "up", "method": "POST", "path": "/partners/orders",
		"status": float64(200), "bytes_in": float64(5), "client_ip": "127.0.0.1", "principal": "acme",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v, want %v", k, line[k], v)
		}
	}
	for _, k := range []string{"time", "host", "endpoint", "bytes_out", "duration_ms", "upstream_ms"} {
		if _, ok := line[k]; !ok {
			t.Errorf("field %s missing from %v", k, line)
		}
	}
	if n, _ := line["bytes_out"].(float64); n <= 0 {
		t.Errorf("bytes_out %v", line["bytes_out"])
	}

	t.Run("no credential anywhere", func(t *testing.T) {
		logData, _ := os.ReadFile(oe.logPath)
		_, metrics := get(t, te.admin+"/metrics")
		_, routesView := get(t, te.admin+"/routes")
		places := map[string]string{"access log": string(logData), "edge log": te.logs.String(), "metrics": string(metrics), "/routes": string(routesView)}
		for place, text := range places {
			for _, secret := range []string{apiKey, bearer, cookie, query, "token=", "Authorization", "Cookie"} {
				if strings.Contains(text, secret) {
					t.Errorf("%s contains %q", place, secret)
				}
			}
		}
	})

	t.Run("the principal of a request refused after auth", func(t *testing.T) {
		for _, l := range accessLines(t, oe.logPath) {
			if l["route"] == "limited" && l["status"] == float64(429) {
				if l["principal"] != "acme" {
					t.Fatalf("429 line principal %v, want acme", l["principal"])
				}
				return
			}
		}
		t.Fatal("no 429 line")
	})

	t.Run("the sidecar logs the edge's request with its trace id and caller", func(t *testing.T) {
		var edgeLine map[string]any
		for _, l := range accessLines(t, oe.logPath) {
			if l["route"] == "orders" {
				edgeLine = l
			}
		}
		if edgeLine == nil {
			t.Fatal("no edge line for /orders/1")
		}
		var line map[string]any
		waitFor(t, func() bool {
			lines := accessLines(t, oe.sidecarLog)
			if len(lines) > 0 {
				line = lines[0]
			}
			return line != nil
		})
		if line["route"] != "inbound" || line["trace_id"] != edgeLine["trace_id"] || line["principal"] != edgeID || line["request_id"] != edgeLine["request_id"] {
			t.Fatalf("sidecar line %v; edge line %v", line, edgeLine)
		}
	})

	t.Run("every request has one line", func(t *testing.T) {
		// 13 requests in startObservedEdge, 1 here; the sidecar's are
		// not in this file (its access log is off).
		if n := len(accessLines(t, oe.logPath)); n != 14 {
			t.Fatalf("%d lines, want 14", n)
		}
	})
}

// TestAccessLogSampling: with sample 0.5, about half the successful
// requests are logged, and every 5xx is.
func TestAccessLogSampling(t *testing.T) {
	up := echoUpstream(t, "up")
	logPath := filepath.Join(t.TempDir(), "access.log")
	te := startEdge(t, fmt.Sprintf("version: 1\nlisten: {http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: %q, sample: 0.5}\n", logPath)+fmt.Sprintf(`upstreams:
  up: {endpoints: [%q]}
  dead: {endpoints: [%q]}
routes:
  - {name: ok, match: {path: /ok}, upstream: up}
  - {name: broken, match: {path: /broken}, upstream: dead}
`, hostPort(up), freeAddr(t)))
	const n = 400
	for range n {
		get(t, te.url+"/ok")
	}
	for range 20 {
		get(t, te.url+"/broken")
	}
	waitFor(t, func() bool {
		c := 0
		for _, l := range accessLines(t, logPath) {
			if l["route"] == "broken" {
				c++
			}
		}
		return c == 20
	})
	ok := 0
	for _, l := range accessLines(t, logPath) {
		if l["route"] == "ok" {
			ok++
		}
	}
	// Binomial(400, 0.5): 5.5 standard deviations either side.
	if ok < 145 || ok > 255 {
		t.Fatalf("%d of %d sampled, want about half", ok, n)
	}
}

// TestGrafanaDashboard checks that every series the example dashboard
// queries is one the edge or the sidecar exports, so a renamed metric
// cannot leave the dashboard silently empty.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("../examples/grafana/causeway-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	oe := startObservedEdge(t)
	exported := map[string]bool{}
	for _, reg := range []prometheus.Gatherer{oe.edge.registry, oe.sidecar.registry} {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			exported[f.GetName()] = true
		}
	}
	// A vector with no series yet (endpoint health without a health
	// checker) is not gathered, but is registered: take its name from its
	// descriptor.
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range []prometheus.Collector{oe.edge.metrics.endpointHealthy, oe.edge.metrics.certExpiry} {
		ch := make(chan *prometheus.Desc, 1)
		c.Describe(ch)
		if m := fqName.FindStringSubmatch((<-ch).String()); m != nil {
			exported[m[1]] = true
		}
	}
	metricName := regexp.MustCompile(`\b((?:causeway|go|process)_[a-z_]+)\b`)
	queried := map[string]bool{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if strings.HasSuffix(m, suffix) && exported[strings.TrimSuffix(m, suffix)] {
						base = strings.TrimSuffix(m, suffix)
					}
				}
				queried[base] = true
				if !exported[base] {
					t.Errorf("panel %q queries %s, which nothing exports", p.Title, m)
				}
			}
		}
	}
	// Every family of docs/observability.md has a panel.
	for _, name := range []string{"causeway_requests_total", "causeway_request_duration_seconds", "causeway_upstream_requests_total",
		"causeway_upstream_duration_seconds", "causeway_ratelimit_decisions_total", "causeway_auth_failures_total",
		"causeway_upstream_endpoint_healthy", "causeway_config_reloads_total", "causeway_certificate_expiry_timestamp_seconds",
		"causeway_mesh_requests_total"} {
		if !queried[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
}

// TestKubernetesExamples decodes the example manifests and checks what ties
// them together: the routes and sidecar files in the ConfigMaps load, the
// containers read them where they are mounted, and the ServiceMonitor
// selects Services that have an admin port.
func TestKubernetesExamples(t *testing.T) {
	type object struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name   string            `yaml:"name"`
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Data map[string]string `yaml:"data"`
		Spec yaml.Node         `yaml:"spec"`
	}
	files, err := filepath.Glob("../examples/kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var objs []object
	for _, path := range files {
		if filepath.Base(path) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var o object
			if err := dec.Decode(&o); err != nil {
				if err.Error() == "EOF" {
					break
				}
				t.Fatalf("%s: %v", path, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: object without apiVersion, kind or name: %+v", path, o)
			}
			objs = append(objs, o)
		}
	}
	kinds := map[string][]object{}
	for _, o := range objs {
		kinds[o.Kind] = append(kinds[o.Kind], o)
	}
	for _, k := range []string{"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "ServiceMonitor", "NetworkPolicy"} {
		if len(kinds[k]) == 0 {
			t.Errorf("no %s", k)
		}
	}

	mountedSecrets := map[string]bool{}
	for _, d := range kinds["Deployment"] {
		var spec struct {
			Template struct {
				Spec struct {
					Volumes []struct {
						Secret *struct {
							SecretName string `yaml:"secretName"`
						} `yaml:"secret"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		}
		if err := d.Spec.Decode(&spec); err != nil {
			t.Fatal(err)
		}
		for _, v := range spec.Template.Spec.Volumes {
			if v.Secret != nil {
				mountedSecrets[v.Secret.SecretName] = true
			}
		}
	}

	t.Run("config files load", func(t *testing.T) {
		for _, cm := range kinds["ConfigMap"] {
			for key, text := range cm.Data {
				var err error
				switch key {
				case "causeway.yaml":
					_, err = routes.Parse(key, []byte(text))
				case "sidecar.yaml":
					_, err = routes.ParseSidecar(key, []byte(text))
				case "kustomization.yaml":
					// The certificate renewal's: every Secret it writes must be
					// one a workload mounts, or renewals renew nothing.
					var k struct {
						Kind    string `yaml:"kind"`
						Secrets []struct {
							Name string `yaml:"name"`
						} `yaml:"secretGenerator"`
					}
					if err = yaml.Unmarshal([]byte(text), &k); err == nil && (k.Kind != "Kustomization" || len(k.Secrets) == 0) {
						t.Errorf("ConfigMap %s: %s is not a kustomization with a secretGenerator", cm.Metadata.Name, key)
					}
					for _, sec := range k.Secrets {
						if !mountedSecrets[sec.Name] {
							t.Errorf("ConfigMap %s: renews Secret %s, which no Deployment mounts", cm.Metadata.Name, sec.Name)
						}
					}
				default:
					t.Errorf("ConfigMap %s: unexpected key %s", cm.Metadata.Name, key)
				}
				if err != nil {
					t.Errorf("ConfigMap %s, %s: %v", cm.Metadata.Name, key, err)
				}
			}
		}
	})

	t.Run("containers read their files where they are mounted", func(t *testing.T) {
		var spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name         string   `yaml:"name"`
						Args         []string `yaml:"args"`
						VolumeMounts []struct {
							Name      string `yaml:"name"`
							MountPath string `yaml:"mountPath"`
						} `yaml:"volumeMounts"`
					} `yaml:"containers"`
					Volumes []struct {
						Name      string `yaml:"name"`
						ConfigMap *struct {
							Name string `yaml:"name"`
						} `yaml:"configMap"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		}
		configMaps := map[string]map[string]string{}
		for _, cm := range kinds["ConfigMap"] {
			configMaps[cm.Metadata.Name] = cm.Data
		}
		checked := 0
		for _, d := range kinds["Deployment"] {
			if err := d.Spec.Decode(&spec); err != nil {
				t.Fatal(err)
			}
			volumes := map[string]string{}
			for _, v := range spec.Template.Spec.Volumes {
				if v.ConfigMap != nil {
					volumes[v.Name] = v.ConfigMap.Name
				}
			}
			for _, c := range spec.Template.Spec.Containers {
				if len(c.Args) != 3 || c.Args[1] != "-config" {
					continue
				}
				found := false
				for _, m := range c.VolumeMounts {
					dir, file := filepath.Split(c.Args[2])
					if cm, ok := volumes[m.Name]; ok && filepath.Clean(dir) == m.MountPath {
						if _, ok := configMaps[cm][file]; ok {
							found = true
						}
					}
				}
				if !found {
					t.Errorf("%s/%s reads %s, which no ConfigMap mount provides", d.Metadata.Name, c.Name, c.Args[2])
				}
				checked++
			}
		}
		if checked != 2 {
			t.Errorf("checked %d causeway containers, want the edge and the sidecar", checked)
		}
	})

	t.Run("the ServiceMonitor selects admin ports", func(t *testing.T) {
		var sm struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Endpoints []struct {
				Port string `yaml:"port"`
			} `yaml:"endpoints"`
		}
		if err := kinds["ServiceMonitor"][0].Spec.Decode(&sm); err != nil {
			t.Fatal(err)
		}
		selected := 0
		for _, svc := range kinds["Service"] {
			match := true
			for k, v := range sm.Selector.MatchLabels {
				if svc.Metadata.Labels[k] != v {
					match = false
				}
			}
			if !match {
				continue
			}
			selected++
			var spec struct {
				Ports []struct {
					Name string `yaml:"name"`
				} `yaml:"ports"`
			}
			if err := svc.Spec.Decode(&spec); err != nil {
				t.Fatal(err)
			}
			if len(spec.Ports) != 1 || spec.Ports[0].Name != sm.Endpoints[0].Port {
				t.Errorf("Service %s selected, ports %+v", svc.Metadata.Name, spec.Ports)
			}
		}
		if selected != 2 {
			t.Errorf("ServiceMonitor selects %d Services, want the edge's and the sidecar's admin", selected)
		}
	})
}
