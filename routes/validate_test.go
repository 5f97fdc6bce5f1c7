package routes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// base is a valid file; each case below breaks it in one place.
const base = `version: 1
upstreams:
  orders:
    endpoints: ["127.0.0.1:7001"]
routes:
  - name: orders
    match: {path_prefix: /orders}
    upstream: orders
`

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string // each an exact error line, in order
	}{
		{"empty file", "", []string{"t.yaml:1:1: file is empty"}},
		{"syntax error", "version: 1\nroutes: [\n", []string{"t.yaml:2:1: YAML syntax: did not find expected node content"}},
		// go-yaml reports its parser's lines from 0: the flow mapping left
		// open on line 4 was reported at 3.
		{"syntax error inside", "version: 1\nlisten: {http: \":8080\"}\nupstreams:\n  u: {endpoints: [\"127.0.0.1:1\"]\nroutes: []\n", []string{"t.yaml:4:1: YAML syntax: did not find expected ',' or '}'"}},
		{"scanner error keeps its line", "version: 1\nupstreams: {}\n\troutes: []\n", []string{"t.yaml:3:1: YAML syntax: found character that cannot start any token"}},
		{"not a mapping", "- a\n- b\n", []string{"t.yaml:1:1: the file must be a mapping with keys such as version, upstreams and routes"}},
		{"two documents", base + "---\nversion: 1\n", []string{"t.yaml:9:1: more than one YAML document: a routes file holds exactly one"}},
		{"unknown top-level key with suggestion", base + "upstream: {}\n", []string{`t.yaml:9:1: upstream: unknown key (did you mean "upstreams"?)`}},
		{"unknown nested key", strings.Replace(base, "path_prefix", "prefix", 1), []string{`t.yaml:7:13: routes[0].match.prefix: unknown key`}},
		{"duplicate key", strings.Replace(base, "upstream: orders\n", "upstream: orders\n    upstream: orders\n", 1), []string{"t.yaml:9:5: routes[0].upstream: duplicate key"}},
		{"bad duration", strings.Replace(base, `endpoints: ["127.0.0.1:7001"]`, "endpoints: [\"127.0.0.1:7001\"]\n    timeout: 5 seconds", 1),
			[]string{`t.yaml:5:14: upstreams.orders.timeout: invalid duration "5 seconds": use a Go duration such as "250ms" or "1m"`}},
		{"negative duration", strings.Replace(base, `endpoints: ["127.0.0.1:7001"]`, "endpoints: [\"127.0.0.1:7001\"]\n    timeout: -1s", 1),
			[]string{`t.yaml:5:14: upstreams.orders.timeout: duration "-1s" must not be negative`}},
		{"wrong type", strings.Replace(base, "version: 1", "version: one", 1), []string{`t.yaml:1:10: version: expected an integer, found the string "one"`}},
		{"list expected", strings.Replace(base, `["127.0.0.1:7001"]`, `127.0.0.1:7001`, 1), []string{`t.yaml:4:16: upstreams.orders.endpoints: expected a list, found the string "127.0.0.1:7001"`}},
		{"every decode error at once", "version: one\nbogus: 1\nupstreams:\n  a: {timeout: x}\n", []string{
			`t.yaml:1:1: routes: no routes: the edge would answer 404 to everything`,
			`t.yaml:1:10: version: expected an integer, found the string "one"`,
			`t.yaml:2:1: bogus: unknown key`,
			`t.yaml:4:16: upstreams.a.timeout: invalid duration "x": use a Go duration such as "250ms" or "1m"`,
		}},
		{"underscore header names that would never arrive", strings.Replace(base, "{path_prefix: /orders}", "{path_prefix: /orders, headers: {X_Tenant: a}}", 1), []string{`t.yaml:7:55: routes[0].match.headers.X_Tenant: header name "X_Tenant" contains '_': such request headers are dropped unless server.allow_underscore_headers is true`}},
		{"unknown path normalisation", base + "server: {path_normalization: lenient}\n", []string{`t.yaml:9:30: server.path_normalization: must be "default" or "strict" (found "lenient")`}},
		{"unknown HTTP/1.1 engine", base + "server: {http1_engine: fasthttp}\n", []string{`t.yaml:9:24: server.http1_engine: must be "net/http" or "causeway" (found "fasthttp")`}},
		{"wrong version", strings.Replace(base, "version: 1", "version: 2", 1), []string{"t.yaml:1:10: version: must be 1 (found 2)"}},
		{"undefined upstream", strings.Replace(base, "upstream: orders", "upstream: order", 1), []string{`t.yaml:8:15: routes[0].upstream: undefined upstream "order"`}},
		{"undefined authenticator", strings.Replace(base, "upstream: orders", "upstream: orders\n    auth: [users]", 1), []string{`t.yaml:9:12: routes[0].auth[0]: undefined authenticator "users"`}},
		{"undefined rate limit", strings.Replace(base, "upstream: orders", "upstream: orders\n    rate_limit: per-ip", 1), []string{`t.yaml:9:17: routes[0].rate_limit[0]: undefined rate limit "per-ip"`}},
		{"undefined plugin", strings.Replace(base, "upstream: orders", "upstream: orders\n    plugins: [cors]", 1), []string{`t.yaml:9:15: routes[0].plugins[0]: undefined plugin instance "cors"`}},
		{"duplicate route name", base + "  - name: orders\n    match: {path_prefix: /other}\n    upstream: orders\n", []string{`t.yaml:9:11: routes[1].name: duplicate route name "orders" (first at line 6)`}},
		{"ambiguous routes", base + "  - name: orders2\n    match: {path_prefix: /orders}\n    upstream: orders\n", []string{`t.yaml:10:12: routes[1].match: ambiguous: matches exactly the same requests as route "orders" (line 6); make one more specific`}},
		{"ambiguous despite method order", base + "  - name: a\n    match: {path: /x, methods: [GET, POST]}\n    upstream: orders\n  - name: b\n    match: {path: /x, methods: [post, get]}\n    upstream: orders\n",
			[]string{`t.yaml:13:12: routes[2].match: ambiguous: matches exactly the same requests as route "a" (line 9); make one more specific`}},
		{"path and prefix", strings.Replace(base, "{path_prefix: /orders}", "{path: /a, path_prefix: /orders}", 1), []string{`t.yaml:7:36: routes[0].match.path_prefix: path and path_prefix are exclusive: use one`}},
		{"path without slash", strings.Replace(base, "{path_prefix: /orders}", "{path: orders}", 1), []string{`t.yaml:7:19: routes[0].match.path: must start with "/" (found "orders")`}},
		{"bad template", strings.Replace(base, "{path_prefix: /orders}", "{path: \"/orders/{id\"}", 1), []string{`t.yaml:7:19: routes[0].match.path: invalid path template: mux: unbalanced braces in "/orders/{id"`}},
		{"bad host", strings.Replace(base, "{path_prefix: /orders}", "{host: \"api.example.com:443\"}", 1), []string{`t.yaml:7:19: routes[0].match.host: "api.example.com:443" is not a host name (a wildcard is "*.example.com"; no port)`}},
		{"no upstream", strings.Replace(base, "    upstream: orders\n", "", 1), []string{`t.yaml:6:5: routes[0]: needs upstream or split`}},
		{"strip_prefix without prefix", strings.Replace(base, "{path_prefix: /orders}", "{path: /orders}\n    strip_prefix: true", 1), []string{`t.yaml:8:19: routes[0].strip_prefix: needs match.path_prefix`}},
		{"negative route timeout", strings.Replace(base, "    upstream: orders\n", "    upstream: orders\n    timeout: -1s\n", 1), []string{`t.yaml:9:14: routes[0].timeout: duration "-1s" must not be negative`}},
		{"bad route timeout", strings.Replace(base, "    upstream: orders\n", "    upstream: orders\n    timeout: soon\n", 1), []string{`t.yaml:9:14: routes[0].timeout: invalid duration "soon": use a Go duration such as "250ms" or "1m"`}},
		{"bad path regex", strings.Replace(base, "{path_prefix: /orders}", "{path_regex: \"/v(\"}", 1), []string{`t.yaml:7:25: routes[0].match.path_regex: not an RE2 regular expression: error parsing regexp: missing closing ): ` + "`/v(`"}},
		{"bad host_rewrite", strings.Replace(base, "upstream: orders\n", "upstream: orders\n    host_rewrite: \"*.example.com\"\n", 1), []string{`t.yaml:9:19: routes[0].host_rewrite: "*.example.com" is not a host name or host:port (no wildcard, lower case)`}},
		{"host_rewrite with a bad port", strings.Replace(base, "upstream: orders\n", "upstream: orders\n    host_rewrite: \"a.example:99999\"\n", 1), []string{`t.yaml:9:19: routes[0].host_rewrite: "a.example:99999" is not a host name or host:port (no wildcard, lower case)`}},
		{"bad header regex", strings.Replace(base, "{path_prefix: /orders}", "{path_prefix: /orders, headers_regex: {X-V: \"v(\"}}", 1), []string{"t.yaml:7:56: routes[0].match.headers_regex.X-V: not an RE2 regular expression: error parsing regexp: missing closing ): `v(`"}},
		{"a header matched two ways", strings.Replace(base, "{path_prefix: /orders}", "{path_prefix: /orders, headers: {x-v: a}, headers_regex: {X-V: a.*}, query: {p: \"1\"}, query_regex: {p: \"[0-9]\", \"\": x}}", 1), []string{
			`t.yaml:7:75: routes[0].match.headers_regex.X-V: header "X-V" is also in headers: match it one way`,
			`t.yaml:7:111: routes[0].match.query_regex: empty query parameter name`,
			`t.yaml:7:115: routes[0].match.query_regex.p: parameter "p" is also in query: match it one way`,
		}},
		{"an underscore header regex", strings.Replace(base, "{path_prefix: /orders}", "{path_prefix: /orders, headers_regex: {x_v: a}}", 1), []string{`t.yaml:7:56: routes[0].match.headers_regex.x_v: header name "x_v" contains '_': such request headers are dropped unless server.allow_underscore_headers is true`}},
		{"tls and plain", strings.Replace(base, "{path_prefix: /orders}", "{path_prefix: /orders, tls: true, plain: true}", 1), []string{`t.yaml:7:53: routes[0].match.plain: tls and plain are exclusive: a route for both connections sets neither`}},
		{"plain not a boolean", strings.Replace(base, "{path_prefix: /orders}", "{path_prefix: /orders, plain: yes-please}", 1), []string{`t.yaml:7:42: routes[0].match.plain: expected true or false, found the string "yes-please"`}},
		{"plain route and TLS route differ", base + "  - name: plain\n    match: {path_prefix: /orders, plain: true}\n    upstream: orders\n  - name: tls\n    match: {path_prefix: /orders, tls: true}\n    upstream: orders\n  - name: plain2\n    match: {path_prefix: /orders, plain: true}\n    upstream: orders\n",
			[]string{`t.yaml:16:12: routes[3].match: ambiguous: matches exactly the same requests as route "plain" (line 9); make one more specific`}},
		{"path regex with a prefix", strings.Replace(base, "{path_prefix: /orders}", "{path_prefix: /orders, path_regex: /o.*}", 1), []string{`t.yaml:7:47: routes[0].match.path_regex: path_regex, path and path_prefix are exclusive: use one`}},
		{"bad endpoint", strings.Replace(base, "127.0.0.1:7001", "127.0.0.1", 1), []string{`t.yaml:4:17: upstreams.orders.endpoints[0]: "127.0.0.1" is not host:port`}},
		{"no routes", "version: 1\nroutes: []\n", []string{`t.yaml:2:9: routes: no routes: the edge would answer 404 to everything`}},
		{"bad balancer", strings.Replace(base, `endpoints: ["127.0.0.1:7001"]`, "endpoints: [\"127.0.0.1:7001\"]\n    balance: random", 1),
			[]string{`t.yaml:5:14: upstreams.orders.balance: unknown balancer "random" (one of round_robin, weighted, least_request, p2c_ewma, ring_hash)`}},
		{"https without tls", strings.Replace(base, "version: 1", "version: 1\nlisten: {https: \":8443\"}", 1), []string{`t.yaml:2:17: listen.https: an https listener needs a tls section with certificates or acme`}},
		{"bad trusted proxy", strings.Replace(base, "version: 1", "version: 1\ntrusted_proxies: [10.0.0.0/33]", 1), []string{`t.yaml:2:19: trusted_proxies[0]: "10.0.0.0/33" is not a CIDR such as 10.0.0.0/8`}},
		// Masked, this is ::/8: ::1 and no IPv4 address at all.
		{"IPv4-mapped trusted proxy shorter than /96", strings.Replace(base, "version: 1", "version: 1\ntrusted_proxies: [\"::ffff:10.0.0.0/8\"]", 1),
			[]string{`t.yaml:2:19: trusted_proxies[0]: "::ffff:10.0.0.0/8" is an IPv4-mapped address with a prefix shorter than /96, which is the IPv6 range ::/8: write IPv4 ranges as IPv4 (10.0.0.0/8)`}},
		{"bad route name", strings.Replace(base, "name: orders", "name: \"orders read\"", 1), []string{`t.yaml:6:11: routes[0].name: route name "orders read": use letters, digits, '.', '_' and '-' (at most 128)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.file))
			if err == nil {
				t.Fatal("file accepted, want errors")
			}
			var list Errors
			if !errors.As(err, &list) {
				t.Fatalf("error %T %v is not Errors", err, err)
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("errors:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestLoadValid(t *testing.T) {
	f, err := Parse("t.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	u := f.Upstreams["orders"]
	if u.Balance != "round_robin" || u.Timeout.D() != DefaultUpstreamTimeout || u.Scheme != "http" {
		t.Fatalf("upstream defaults not applied: %+v", u)
	}
	if f.Listen.HTTP != DefaultHTTPAddr || f.Listen.Admin != DefaultAdminAddr {
		t.Fatalf("listen defaults not applied: %+v", f.Listen)
	}
	if f.Server.ReadHeaderTimeout.D() != DefaultReadHeaderTimeout || f.Server.MaxHeaderBytes != DefaultMaxHeaderBytes {
		t.Fatalf("server defaults not applied: %+v", f.Server)
	}
	if got := f.At("routes[0].upstream"); got != (Pos{8, 15}) {
		t.Fatalf("position of routes[0].upstream = %v", got)
	}
	if got := f.At("routes[0].auth"); got != (Pos{6, 5}) {
		t.Fatalf("position of an absent key falls back to its parent: got %v", got)
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(strings.Repeat("#", MaxFileSize+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), big+":1:1: file is larger than") {
		t.Fatalf("oversized file: %v", err)
	}
}

// The example files shipped in the repository must stay valid.
func TestExamplesAreValid(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.yaml")
	more, _ := filepath.Glob("../examples/*/*.yaml")
	files = append(files, more...)
	n := 0
	for _, f := range files {
		if strings.Contains(f, "sidecar") || strings.Contains(f, "kubernetes") {
			continue
		}
		n++
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f); err != nil {
				t.Fatal(err)
			}
		})
	}
	if n == 0 {
		t.Fatal("no example routes files found")
	}
}

func TestRawDecode(t *testing.T) {
	f, err := Parse("t.yaml", []byte(base+"plugins:\n  p:\n    use: x\n    config: {max: 10, extra: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Max int `yaml:"max"`
	}
	err = f.Plugins["p"].Config.Decode(&cfg)
	if err == nil || err.Error() != "t.yaml:12:23: plugins.p.config.extra: unknown key" {
		t.Fatalf("got %v", err)
	}
	if e := f.Plugins["p"].Config.ErrorAt("max", "too large"); e.Error() != "t.yaml:12:19: plugins.p.config.max: too large" {
		t.Fatalf("ErrorAt: %v", e)
	}
}

// A plugin's config may hold nested lists, where YAML aliases can expand a
// small file exponentially: decoding must stop, not eat the edge's memory.
func TestAliasBomb(t *testing.T) {
	bomb := base + `plugins:
  p:
    use: x
    config:
      a: &a [x, x, x, x, x, x, x, x, x, x]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
`
	f, err := Parse("t.yaml", []byte(bomb))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		A []string             `yaml:"a"`
		B [][]string           `yaml:"b"`
		C [][][]string         `yaml:"c"`
		D [][][][]string       `yaml:"d"`
		E [][][][][]string     `yaml:"e"`
		F [][][][][][]string   `yaml:"f"`
		G [][][][][][][]string `yaml:"g"`
	}
	err = f.Plugins["p"].Config.Decode(&cfg)
	if err == nil || !strings.Contains(err.Error(), "expands to more than") {
		t.Fatalf("alias bomb: %v", err)
	}
}
