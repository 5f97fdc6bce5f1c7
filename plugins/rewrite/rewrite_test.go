package rewrite

import (
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
		{"unknown key", "rules: [{ match: '^/a', replace: /b, code: 301 }]", "plugins.p.config.rules[0].code: unknown key"},
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
