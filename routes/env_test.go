package routes

import (
	"strings"
	"testing"
	"time"
)

var testEnv = MapEnv(map[string]string{
	"HOST":   "api.example.com",
	"PORT":   "7001",
	"EMPTY":  "",
	"LIMIT":  "25",
	"TMO":    "250ms",
	"NESTED": "${HOST}",
	"MAP":    "{a: b}",
	"LIST":   "[x, y]",
	"ALIAS":  "*a",
	"TAGGED": "!!binary aGk=",
	"NULL":   "null",
	"MULTI":  "a\nb: c",
	"lower":  "ok",
})

func TestExpandEnv(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "plain", want: "plain"},
		{in: "${HOST}", want: "api.example.com"},
		{in: "http://${HOST}:${PORT}/x", want: "http://api.example.com:7001/x"},
		{in: "${lower}", want: "ok"},
		{in: "${_X:-d}", want: "d"},
		{in: "${UNSET:-fallback}", want: "fallback"},
		{in: "${UNSET:-}", want: ""},
		{in: "${EMPTY:-fallback}", want: "fallback"},
		{in: "${EMPTY}", want: ""},
		{in: "${HOST:-fallback}", want: "api.example.com"},
		{in: "${UNSET:-a:-b}", want: "a:-b"},
		{in: "${UNSET:-x $ y}", want: "x $ y"},
		{in: "$$", want: "$"},
		{in: "$${HOST}", want: "${HOST}"},
		{in: "$$$${HOST}", want: "$${HOST}"},
		{in: "$$${HOST}", want: "$api.example.com"},
		{in: "^/v1$", want: "^/v1$"},
		{in: "/api/$1", want: "/api/$1"},
		{in: "$", want: "$"},
		{in: "a$b", want: "a$b"},
		{in: "${NESTED}", want: "${HOST}"}, // one pass
		{in: "${UNSET}", err: "environment variable UNSET is not set"},
		{in: "x ${HOST", err: "unterminated environment reference"},
		{in: "${}", err: "invalid environment reference"},
		{in: "${1X}", err: "invalid environment reference"},
		{in: "${A-B}", err: "invalid environment reference"},
		{in: "${A:=b}", err: "invalid environment reference"},
		{in: "${A B}", err: "invalid environment reference"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ExpandEnv(tt.in, testEnv)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ExpandEnv(%q) = %q, %v; want error %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ExpandEnv(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// References are expanded per scalar after parsing: into strings, lists,
// numbers, durations and plugin configs, in YAML and JSON files alike; a
// value can never add structure, and positions stay those of the file.
func TestParseEnv(t *testing.T) {
	file := `version: 1
upstreams:
  orders:
    endpoints: ["127.0.0.1:${PORT}", "${UNSET_B:-127.0.0.1:7002}"]
    timeout: ${TMO}
rate_limits:
  l:
    key: client_ip
    limit: ${LIMIT}
    per: 1s
  q: {key: client_ip, limit: "${LIMIT}", per: "${UNSET_PER:-1m}"}
plugins:
  p: {use: x, config: {host: "${HOST}", list: [&a "${PORT}", *a], keep: "$${HOST}", n: "${LIMIT}", on: "${UNSET_ON:-true}"}}
server: {body_read_timeout: "${TMO}"}
routes:
  - name: orders
    match: {host: "${HOST}", path_prefix: "/o$$"}
    upstream: orders
    rate_limit: l
`
	f, err := ParseEnv("t.yaml", []byte(file), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	u := f.Upstreams["orders"]
	if got := strings.Join(u.Endpoints, ","); got != "127.0.0.1:7001,127.0.0.1:7002" {
		t.Fatalf("endpoints %q", got)
	}
	if time.Duration(u.Timeout) != 250*time.Millisecond || f.RateLimits["l"].Limit != 25 || f.RateLimits["q"].Limit != 25 || time.Duration(f.RateLimits["q"].Per) != time.Minute {
		t.Fatalf("timeout %v, limit %d, per %v", u.Timeout, f.RateLimits["l"].Limit, f.RateLimits["q"].Per)
	}
	if b := f.Server.BodyReadTimeout; b == nil || time.Duration(*b) != 250*time.Millisecond {
		t.Fatalf("body_read_timeout %v", b)
	}
	if r := f.Routes[0]; r.Match.Host != "api.example.com" || r.Match.PathPrefix != "/o$" {
		t.Fatalf("match %+v", r.Match)
	}
	var cfg struct {
		Host string   `yaml:"host"`
		List []string `yaml:"list"`
		Keep string   `yaml:"keep"`
		N    int      `yaml:"n"`
		On   bool     `yaml:"on"`
	}
	if err := f.Plugins["p"].Config.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "api.example.com" || strings.Join(cfg.List, ",") != "7001,7001" || cfg.Keep != "${HOST}" || cfg.N != 25 || !cfg.On {
		t.Fatalf("plugin config %+v", cfg)
	}

	t.Run("json", func(t *testing.T) {
		js := `{"version": 1,
 "upstreams": {"orders": {"endpoints": ["${HOST}:${PORT}"]}},
 "routes": [{"name": "orders", "match": {"path_prefix": "/"}, "upstream": "orders"}]}`
		f, err := ParseEnv("t.json", []byte(js), testEnv)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Upstreams["orders"].Endpoints[0]; got != "api.example.com:7001" {
			t.Fatalf("endpoint %q", got)
		}
	})

	t.Run("nil environment", func(t *testing.T) {
		_, err := ParseEnv("t.yaml", []byte(strings.Replace(base, "/orders}", "\"${P:-/orders}\"}", 1)), nil)
		if err != nil {
			t.Fatalf("a default needs no environment: %v", err)
		}
		_, err = ParseEnv("t.yaml", []byte(strings.Replace(base, "/orders}", "\"${P}\"}", 1)), nil)
		if err == nil {
			t.Fatal("an unset reference without a default must be refused")
		}
	})
}

// Every unset reference is an error at its own position, all at once.
func TestParseEnvErrors(t *testing.T) {
	file := `version: 1
upstreams:
  orders:
    endpoints: ["${NOPE_1}:80", "ok:80"]
    timeout: ${NOPE_2}
plugins:
  p: {use: x, config: {deep: [{v: "${NOPE_3}"}]}}
routes:
  - name: orders
    match: {path_prefix: "/x${BAD"}
    upstream: orders
`
	_, err := ParseEnv("t.yaml", []byte(file), testEnv)
	want := []string{
		"t.yaml:4:17: upstreams.orders.endpoints[0]: environment variable NOPE_1 is not set",
		"t.yaml:5:14: upstreams.orders.timeout: environment variable NOPE_2 is not set",
		"t.yaml:7:35: plugins.p.config.deep[0].v: environment variable NOPE_3 is not set",
		"t.yaml:10:26: routes[0].match.path_prefix: unterminated environment reference",
	}
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d:\n got %s\nwant %s...", i, lines[i], w)
		}
	}
}

// A variable's value is one scalar, whatever it holds: it cannot add a
// mapping, a list, an alias, a tag or a second key.
func TestParseEnvNoInjection(t *testing.T) {
	for _, v := range []string{"MAP", "LIST", "ALIAS", "TAGGED", "MULTI", "NULL"} {
		t.Run(v, func(t *testing.T) {
			file := strings.Replace(base, "path_prefix: /orders}", "path_prefix: /orders, host: \"${"+v+"}\"}", 1)
			f, err := ParseEnv("t.yaml", []byte(file), testEnv)
			want, _ := testEnv(v)
			if err != nil {
				// Refused by the host check is fine; refused by the
				// decoder as structure would not be.
				if strings.Contains(err.Error(), "expected") || strings.Contains(err.Error(), "unknown key") {
					t.Fatalf("the value was parsed as YAML: %v", err)
				}
				return
			}
			if got := f.Routes[0].Match.Host; got != want {
				t.Fatalf("host %q, want %q", got, want)
			}
		})
	}
}

func TestParseSidecarEnv(t *testing.T) {
	file := strings.Replace(sidecarBase, `forward_to: "127.0.0.1:7001"`, `forward_to: "127.0.0.1:${PORT}"`, 1)
	s, err := ParseSidecarEnv("s.yaml", []byte(file), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if s.Inbound.ForwardTo != "127.0.0.1:7001" {
		t.Fatalf("forward_to %q", s.Inbound.ForwardTo)
	}
	_, err = ParseSidecarEnv("s.yaml", []byte(strings.Replace(file, "${PORT}", "${NOPE}", 1)), testEnv)
	if err == nil || !strings.HasPrefix(err.Error(), "s.yaml:5:15: inbound.forward_to: environment variable NOPE is not set") {
		t.Fatalf("got %v", err)
	}
}

// FuzzExpandEnv: escaping every '$' as "$$" gives back the input, whatever
// the environment; nothing panics; text without '$' is unchanged; an
// expansion that succeeds with every variable set to "" and with every
// variable set to "v" differs only where references were.
func FuzzExpandEnv(f *testing.F) {
	for _, s := range []string{"", "$", "$$", "${A}", "${A:-b}", "${A", "x${A}y$${B}$1", "${:-}", "${A:-${B}}", "$$${A}"} {
		f.Add(s)
	}
	empty := func(string) (string, bool) { return "", true }
	full := func(string) (string, bool) { return "v", true }
	f.Fuzz(func(t *testing.T, s string) {
		esc := strings.ReplaceAll(s, "$", "$$")
		if got, err := ExpandEnv(esc, full); err != nil || got != s {
			t.Fatalf("ExpandEnv(%q) = %q, %v; want %q", esc, got, err, s)
		}
		e1, err1 := ExpandEnv(s, empty)
		e2, err2 := ExpandEnv(s, full)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("%q: errors differ with the environment's values: %v / %v", s, err1, err2)
		}
		if !strings.Contains(s, "$") && (e1 != s || err1 != nil) {
			t.Fatalf("%q without '$' changed: %q %v", s, e1, err1)
		}
		if err1 == nil && !strings.Contains(s, "${") && (e1 != e2 || strings.Contains(s, "$$") == (e1 == s)) {
			t.Fatalf("%q without references: %q / %q", s, e1, e2)
		}
		_, _ = ExpandEnv(s, nil)
	})
}
