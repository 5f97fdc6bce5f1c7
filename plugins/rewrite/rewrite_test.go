package rewrite

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/plugins/plugintest"
)

func TestConfigErrors(t *testing.T) {
	tests := []struct{ desc, config, want string }{
		{"no rules", "", "plugins.p.config.rules: rules is required"},
		{"no match", "rules: [{ replace: /x }]", "plugins.p.config.rules[0]: match is required"},
		{"bad regexp", "rules:\n  - { match: '/ok', replace: /x }\n  - { match: '(', replace: /x }", "plugins.p.config.rules[1].match: error parsing regexp"},
		{"relative rewrite", "rules: [{ match: '^/a', replace: b }]", `plugins.p.config.rules[0].replace: a rewritten path must start with "/"`},
		{"redirect to a scheme-less host", "rules: [{ match: '^/a', replace: 'evil.example', redirect: 301 }]", "a redirect goes to a path"},
		{"bad redirect status", "rules: [{ match: '^/a', replace: /b, redirect: 200 }]", "plugins.p.config.rules[0].redirect: 200 is not a redirect status"},
		{"missing group", "rules: [{ match: '^/a/(.*)', replace: /b/$2 }]", "$2, but match has 1 group(s)"},
		{"missing named group", "rules: [{ match: '^/a/(?P<id>.*)', replace: '/b/$${idx}' }]", `no group named "idx"`},
		{"a literal dollar is no group", "rules: [{ match: '^/a/(.*)', replace: '/b/$$$$2/$2' }]", "$2, but match has 1 group(s)"},
		{"unknown key", "rules: [{ match: '^/a', replace: /b, code: 301 }]", "plugins.p.config.rules[0].code: unknown key"},
		{"scheme on a rewrite", "rules: [{ match: '^/a', replace: /b, scheme: https }]", "plugins.p.config.rules[0]: scheme, host and port apply to a redirect only"},
		{"scheme with a URL", "rules: [{ match: '^/a', replace: 'https://x.example/', redirect: 301, scheme: https }]", "rules[0].replace: with scheme, host or port, replace is a path"},
		{"bad scheme", "rules: [{ match: '^/a', replace: /b, redirect: 301, scheme: ftp }]", `rules[0].scheme: "ftp": http or https`},
		{"bad port", "rules: [{ match: '^/a', replace: /b, redirect: 301, port: 70000 }]", "rules[0].port: 70000 is not a port"},
		{"host with a port", "rules: [{ match: '^/a', replace: /b, redirect: 301, host: 'x.example:80' }]", `rules[0].host: "x.example:80" is not a host name`},
		{"host with a user", "rules: [{ match: '^/a', replace: /b, redirect: 301, host: 'u@x.example' }]", `is not a host name`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got := plugintest.ConfigError(t, "rewrite", tt.config)
			if !strings.Contains(got, tt.want) {
				t.Fatalf("error %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRewrite(t *testing.T) {
	inst := plugintest.MustNew(t, "rewrite", `rules:
  - { match: '^/v1/(?P<rest>.*)$', replace: '/api/v1/$${rest}' }
  - { match: '^/search$', replace: '/find?src=legacy' }
  - { match: '^/static/(.*)$', replace: '/assets/$1' }
  - { match: '^/old/(.*)$', replace: '/new/$1', redirect: 301 }
  - { match: '^/go/(.*)$', replace: '/$1', redirect: 302 }
  - { match: '^/docs(/.*)?$', replace: 'https://docs.example.com$1', redirect: 308 }
  - { match: '^/v1/never$', replace: '/unreachable' }`)
	var seenURI, seenPath string
	h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenURI, seenPath = r.URL.RequestURI(), r.URL.Path
		if r.RequestURI != seenURI {
			t.Errorf("RequestURI %q and URL %q disagree", r.RequestURI, seenURI)
		}
	}))
	tests := []struct {
		desc, target string
		wantURI      string // rewritten: what the upstream sees
		wantStatus   int
		wantLocation string
	}{
		{"named group", "/v1/orders/7?x=1", "/api/v1/orders/7?x=1", 200, ""},
		{"first match wins", "/v1/never", "/api/v1/never", 200, ""},
		{"query from the rule comes first", "/search?q=boots", "/find?src=legacy&q=boots", 200, ""},
		{"dot segments from a group are refused", "/static/..%2f..%2fetc/passwd", "", 400, ""},
		{"dot segments in a redirect are refused", "/old/..%2f..%2fadmin", "", 400, ""},
		{"repeated slashes are collapsed", "/static//css//a.css", "/assets/css/a.css", 200, ""},
		{"no rule matches", "/other?y=2", "/other?y=2", 200, ""},
		{"redirect keeps the query", "/old/page?a=b", "", 301, "/new/page?a=b"},
		{"redirect cannot become protocol-relative", "/go//evil.example/x", "", 302, "/evil.example/x"},
		{"redirect cannot use a backslash host", "/go/%5Cevil.example", "", 302, "/%5Cevil.example"},
		{"absolute redirect", "/docs/intro", "", 308, "https://docs.example.com/intro"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			seenURI, seenPath = "", ""
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.target, nil))
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d", rec.Code, tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				if seenURI != "" {
					t.Fatal("a redirect or refusal reached the upstream")
				}
				if loc := rec.Header().Get("Location"); loc != tt.wantLocation {
					t.Fatalf("Location %q, want %q", loc, tt.wantLocation)
				}
				return
			}
			if seenURI != tt.wantURI {
				t.Fatalf("upstream saw %q (path %q), want %q", seenURI, seenPath, tt.wantURI)
			}
		})
	}
}

func TestRedirectOrigin(t *testing.T) {
	inst := plugintest.MustNew(t, "rewrite", `rules:
  - { match: '^/host(.*)$', replace: '/x$1', redirect: 302, host: example.org }
  - { match: '^/port(.*)$', replace: '$1', redirect: 302, port: 8443 }
  - { match: '^/tls-port(.*)$', replace: '$1', redirect: 302, scheme: https, port: 443 }
  - { match: '^/tls(.*)$', replace: '$1', redirect: 301, scheme: https }
  - { match: '^/http-port(.*)$', replace: '$1', redirect: 302, scheme: http, port: 8080 }
  - { match: '^/all(.*)$', replace: '/y$1', redirect: 308, scheme: https, host: b.example, port: 9443 }`)
	h := inst.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("a redirect reached the next handler") }))
	tests := []struct {
		desc, host, target string
		tls                bool
		wantStatus         int
		wantLocation       string
	}{
		{"scheme only keeps the host, drops its port", "shop.example:8080", "/tls/a?q=1", false, 301, "https://shop.example/a?q=1"},
		{"host only keeps the request's scheme and port", "shop.example:8080", "/host/b", false, 302, "http://example.org:8080/x/b"},
		{"host only over TLS", "shop.example", "/host/b", true, 302, "https://example.org/x/b"},
		{"port only", "shop.example", "/port/c", false, 302, "http://shop.example:8443/c"},
		{"the scheme's own port is left out", "shop.example", "/tls-port/d", false, 302, "https://shop.example/d"},
		{"http with another port", "shop.example", "/http-port/e", true, 302, "http://shop.example:8080/e"},
		{"everything set", "shop.example", "/all/f", false, 308, "https://b.example:9443/y/f"},
		{"an IPv4 host", "10.0.0.1", "/tls/g", false, 301, "https://10.0.0.1/g"},
		{"an IPv6 host", "[2001:db8::1]:80", "/tls/h", false, 301, "https://[2001:db8::1]/h"},
		{"an empty path", "shop.example", "/tls", false, 301, "https://shop.example/"},
		{"a captured double slash stays on the host", "shop.example", "/tls//evil.example/x", false, 301, "https://shop.example/evil.example/x"},
		{"a host with a user part is refused", "user@evil.example", "/tls/a", false, 400, ""},
		{"a host with a path is refused", "evil.example/x", "/tls/a", false, 400, ""},
		{"a host with a backslash is refused", `evil.example\x`, "/tls/a", false, 400, ""},
		{"an empty host is refused", "", "/tls/a", false, 400, ""},
		{"the rule's host ignores a hostile one", "user@evil.example", "/host/z", false, 302, "http://example.org/x/z"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			r.Host = tt.host
			if !tt.tls {
				r.TLS = nil
			} else if r.TLS == nil {
				r.TLS = &tls.ConnectionState{}
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.wantStatus || w.Header().Get("Location") != tt.wantLocation {
				t.Fatalf("got %d Location %q, want %d %q", w.Code, w.Header().Get("Location"), tt.wantStatus, tt.wantLocation)
			}
		})
	}
}
