package requestid

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/plugins/plugintest"
)

func TestConfigErrors(t *testing.T) {
	tests := []struct{ desc, config, want string }{
		{"bad header", "header: 'X Id'", `plugins.p.config.header: "X Id" is not a header name`},
		{"bad generator", "generate: ulid", `plugins.p.config.generate: "ulid": use edge, uuid or hex`},
		{"keep incoming of the edge's header", "keep_incoming: true", "the edge decides"},
		{"nothing to do", "echo: false", "nothing to do"},
		{"unknown key", "format: uuid", "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := plugintest.ConfigError(t, "request_id", tt.config); !strings.Contains(got, tt.want) {
				t.Fatalf("error %q, want %q", got, tt.want)
			}
		})
	}
}

var (
	uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	hexRe  = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

func TestRequestID(t *testing.T) {
	tests := []struct {
		desc, config   string
		incoming       map[string]string
		header         string
		wantUpstream   func(string) bool
		wantEcho       bool
		wantInfoChange bool
	}{
		{
			desc: "default echoes the edge's id", config: "",
			incoming: map[string]string{"X-Request-Id": "edge-1"}, header: "X-Request-Id",
			wantUpstream: eq("edge-1"), wantEcho: true,
		},
		{
			desc: "edge id under another header", config: "header: X-Correlation-Id\necho: false",
			incoming: map[string]string{"X-Request-Id": "edge-1", "X-Correlation-Id": "forged"}, header: "X-Correlation-Id",
			wantUpstream: eq("edge-1"),
		},
		{
			desc: "keep a well-formed incoming id", config: "header: X-Correlation-Id\ngenerate: uuid\nkeep_incoming: true",
			incoming: map[string]string{"X-Correlation-Id": "abc-123"}, header: "X-Correlation-Id",
			wantUpstream: eq("abc-123"), wantEcho: true,
		},
		{
			desc: "replace a malformed incoming id", config: "header: X-Correlation-Id\ngenerate: uuid\nkeep_incoming: true",
			incoming: map[string]string{"X-Correlation-Id": "a b\"c"}, header: "X-Correlation-Id",
			wantUpstream: uuidRe.MatchString, wantEcho: true,
		},
		{
			desc: "uuid replaces the edge id", config: "generate: uuid",
			incoming: map[string]string{"X-Request-Id": "edge-1"}, header: "X-Request-Id",
			wantUpstream: uuidRe.MatchString, wantEcho: true, wantInfoChange: true,
		},
		{
			desc: "hex", config: "generate: hex\nheader: X-Trace",
			header: "X-Trace", wantUpstream: hexRe.MatchString, wantEcho: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			inst := plugintest.MustNew(t, "request_id", tt.config)
			var got, info string
			h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r.Header.Get(tt.header)
				info = plugins.RequestID(r)
			}))
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			for k, v := range tt.incoming {
				r.Header.Set(k, v)
			}
			if id := tt.incoming["X-Request-Id"]; id != "" {
				r = r.WithContext(plugins.WithRequestInfo(r.Context(), plugins.RequestInfo{Route: "r", RequestID: id}))
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if !tt.wantUpstream(got) {
				t.Fatalf("upstream saw %s: %q", tt.header, got)
			}
			if echo := rec.Header().Get(tt.header); tt.wantEcho != (echo == got) {
				t.Fatalf("response %s = %q, upstream saw %q, want echo %v", tt.header, echo, got, tt.wantEcho)
			}
			if tt.wantInfoChange && info != got {
				t.Fatalf("RequestInfo id %q, header %q: they must agree", info, got)
			}
		})
	}
}

func TestIDsDiffer(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		for _, id := range []string{newUUID(), newHex()} {
			if seen[id] {
				t.Fatalf("id %s generated twice", id)
			}
			seen[id] = true
		}
	}
}

func eq(want string) func(string) bool { return func(s string) bool { return s == want } }
