package routeinfo

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/auth"
	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/plugins/plugintest"
	"github.com/causewayhq/causeway/routes"
)

func TestConfigErrors(t *testing.T) {
	tests := []struct{ desc, config, want string }{
		{"unknown key", "route_heder: X-R", `plugintest.yaml:10:7: plugins.p.config.route_heder: unknown key (did you mean "route_header"?)`},
		{"bad header", "route_header: 'X R'", `plugins.p.config.route_header: "X R" is not a header name`},
		{"require without header", "require_subject: true", "plugins.p.config.require_subject: require_subject needs subject_header"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := plugintest.ConfigError(t, "route_info", tt.config); !strings.Contains(got, tt.want) {
				t.Fatalf("error %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHeaders(t *testing.T) {
	tests := []struct {
		desc, config string
		principal    *auth.Principal
		forged       string
		wantStatus   int
		wantRoute    string
		wantSubject  string
	}{
		{"default header", "", nil, "", 200, "orders", ""},
		{"subject from auth", "subject_header: X-Subject", &auth.Principal{Subject: "alice"}, "", 200, "orders", "alice"},
		{"forged subject removed", "subject_header: X-Subject", nil, "root", 200, "orders", ""},
		{"required subject missing", "subject_header: X-Subject\nrequire_subject: true", nil, "root", 401, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			inst := plugintest.MustNew(t, "route_info", tt.config)
			var route, subject string
			h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				route, subject = r.Header.Get("X-Causeway-Route"), r.Header.Get("X-Subject")
			}))
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.forged != "" {
				r.Header.Set("X-Subject", tt.forged)
			}
			ctx := plugins.WithRequestInfo(r.Context(), plugins.RequestInfo{Route: "orders", RequestID: "id-1"})
			if tt.principal != nil {
				ctx = auth.NewContext(ctx, tt.principal)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r.WithContext(ctx))
			if rec.Code != tt.wantStatus || route != tt.wantRoute || subject != tt.wantSubject {
				t.Fatalf("got %d route %q subject %q; want %d %q %q", rec.Code, route, subject, tt.wantStatus, tt.wantRoute, tt.wantSubject)
			}
			if tt.wantStatus == 401 && !strings.Contains(rec.Body.String(), `"status":401`) {
				t.Fatalf("body %q", rec.Body)
			}
		})
	}
}

// TestCloseOnReload loads two generations of a routes file as the edge
// does on reload and checks that dropping the first closes its instance.
func TestCloseOnReload(t *testing.T) {
	load := func(cfg string) (*plugins.Instances, *RouteInfo) {
		f, err := routes.Parse("r.yaml", []byte(plugintest.Routes("route_info", cfg)))
		if err != nil {
			t.Fatal(err)
		}
		s, err := plugins.NewInstances(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		i, _ := s.Get("p")
		return s, i.(*RouteInfo)
	}
	old, oldInst := load("")
	next, nextInst := load("route_header: X-R")
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if !oldInst.closed.Load() || nextInst.closed.Load() {
		t.Fatalf("closed: old %v, new %v", oldInst.closed.Load(), nextInst.closed.Load())
	}
	next.Close()
}
